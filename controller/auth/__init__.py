"""Who calls the controller's API, and what they may do.

- permissions  the roles, their permissions, and the one table naming the
               permission each RPC needs
- tokens       API tokens: their secrets, hashes, and a short cache of checks
- principals   principals and tokens in the database; the bootstrap admin
- caller       the principal of the call being served (a contextvar)
- interceptor  the server interceptor that authenticates and authorizes
- servicer     PrincipalService on the wire
- wiring       what the app installs: interceptor, servicer, bootstrap admin
"""
