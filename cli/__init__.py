"""The `mini-ledger` command: zero-config run (embedded servers, supervision), one process,
migrate, audit, keys, import. Operator tooling: neither the API nor the worker imports it."""
