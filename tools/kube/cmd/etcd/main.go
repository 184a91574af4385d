// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the version
// k8s.io/kubernetes is tested with. The upstream `etcd` main package lives in the etcd root
// module, which the Go module proxy does not serve at a matching release, so this wraps
// etcdmain the same way upstream's main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
