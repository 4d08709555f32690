"""The controller's certificate authority.

- ca     the CA: made at first start or brought by the operator; signs the
         certificates of the controller, hosts and users, and the CRL
- store  the CA and the controller's own certificate in its state folder
"""

from __future__ import annotations
