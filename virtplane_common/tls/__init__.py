"""virtplane's TLS identities, shared by the controller, hostd and clients.

- names       who a certificate names: a role (controller, host, user) and a
              name, written as one URI subject alternative name; a host's DNS
              name, which TLS itself checks when a host is dialled
- keys        private keys and certificate signing requests (a key never
              leaves the machine that made it)
- files       keys and certificates on disk: written atomically, keys 0600
- credentials gRPC server and channel credentials; a server's certificate is
              swapped without a restart
- revocation  the revoked serials a CRL signed by the CA lists

The certificate authority itself is the controller's (controller.pki).
"""

from __future__ import annotations
