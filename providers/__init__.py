"""Provider plugins: one module per secret store, each implementing ``providers.base.Provider``.

A provider module must import its client library (hvac, boto3, ...) only when a provider of
its type is constructed, so ``syncd --help`` and configs that don't use it stay fast.
"""
