"""What the tests are built from; conftest.py files hold only the fixtures
made of these, and test modules import from here, never from a conftest.

Module map:

- `waiting`: the one polling helper, `until` (async) and `until_sync`, and
  `next_item` for a stream: a timeout fails the test saying what it awaited
  and the last value seen.
- `events`: following event streams: `EventLog` (mark, wait, first) and its
  readers of hostd's events (`HostEvents`) and of the controller's WatchVms
  (`VmEvents` raw, `VmChanges` through virtplane_client; `vm_until`).
- `real`: where the repository, the guest image, libvirt and PostgreSQL are;
  `skip_or_fail` when one is missing.
- `virt`: libvirt helpers: domains (exists, remove), disk images and the
  disks of a domain's XML, test-driver hosts (`node_xml`), the second
  libvirtd.
- `private_libvirtd`: a libvirtd of the tests' own, to stop and start under a
  running hostd.
- `postgres`: test databases on the PostgreSQL server.
- `stack`: the real daemons (controller, hostd) as processes on loopback.
- `guests`: real guests over the whole stack: a virtplane_client on the
  stack (`Api`), the spec of the test guest, what a fully reported guest looks like.
- `node_client`: the Node client (tests/node/client.js) run as a process
  against a controller, its JSON lines read (`run_node`, fixture `node`).
- `controller_rig`: an in-process controller with raw stubs and a
  virtplane_client on it (`Rig`), VM specs and error checks for the
  controller's tests.
- `hostd_rig`: a VmService on the fake hypervisor (`Rig`), VM configurations
  boot files and hook scripts for hostd's tests.
- `db_rig`: rows and held transactions for the database's concurrency
  tests.
- `fake_guest`: the guest end of a guest channel (`FakeGuest`).
- `proto_strategies`: hypothesis strategies for any request message, drawn
  from its Descriptor and biased to edge values (`requests`, `Pool`).
- `api_calls`: any RPC called by its descriptor over a real channel and
  checked (never INTERNAL or UNKNOWN, well-formed answers), and `drive` /
  `drive_async` to run hypothesis cases reproducibly on the event loop.
- `consistency`: the controller database's invariants (`problems`), checked
  after each case of the API's property test.
"""
