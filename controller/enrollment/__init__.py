"""Host identity: enrollment, revocation and renewal of hosts' certificates.

- errors      what enrollment refuses, in the API's error categories
- authority   the controller's CA, opened from ``<state>/pki`` when first needed
- tokens      one-time enrollment tokens: made, stored hashed, redeemed once
- records     a host's certificate as the hosts table records it
- revocation  the revoked certificates, the CRL, and the check of a serial
- enroll      CreateEnrollmentToken and EnrollHost: signs hostd's own key
- renewal     a host's new certificate before its old one runs out
- keeper      while a host's monitor is connected: its CRL and its renewals
- servicer    EnrollmentService (thin)
- wiring      what controller.app builds and installs
"""

from __future__ import annotations
