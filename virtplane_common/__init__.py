"""virtplane_common: the runtime the controller, hostd and guestd share.

Hand-written, beside (never inside) the generated code of protos/:

- errors      the API's error categories, each one gRPC status code
- status      the one interceptor that turns them into status codes
- health      gRPC health and reflection on a daemon's server
- properties  the rules for a VM's custom properties
- limits      the bounds of what is stored and run, one table for every side
- validation  the checks of names, addresses, paths and spec fields, for both sides
- framing     the guest channel's frames (the guest wheel bundles it, Python 3.9)
- grpc_limits the message sizes every gRPC server and channel sets
- tls         identities in certificates, keys, their files, gRPC credentials and
              revocation lists (the CA itself is controller.pki)
"""

from __future__ import annotations
