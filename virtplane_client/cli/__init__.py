"""The `virtplane` command, built on AsyncClient:

- main      the parser, running a command, errors as one line and exit 1
- vms       virtplane vm …
- migration vm migrate --wait: the transfer's progress, live
- hosts     virtplane host …
- affinity  virtplane affinity …
- ops       virtplane op …, virtplane events, the --request-id and --wait options
- format    how the models are printed
"""
