// The controller's virtplane.v1 API over gRPC-Web, from this page's own
// origin, each call carrying the signed-in token; errors put in words with
// their gRPC code.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { VmService } from "./gen/virtplane/v1/vm_service_pb";
import { HostService } from "./gen/virtplane/v1/host_service_pb";
import { OperationService } from "./gen/virtplane/v1/operation_service_pb";
import { PrincipalService } from "./gen/virtplane/v1/principal_service_pb";

export interface Api {
  vms: Client<typeof VmService>;
  hosts: Client<typeof HostService>;
  operations: Client<typeof OperationService>;
  principals: Client<typeof PrincipalService>;
}

export function connect(token: string): Api {
  const bearer: Interceptor = (next) => async (request) => {
    if (token) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({
    baseUrl: window.location.origin,
    interceptors: [bearer],
  });
  return {
    vms: createClient(VmService, transport),
    hosts: createClient(HostService, transport),
    operations: createClient(OperationService, transport),
    principals: createClient(PrincipalService, transport),
  };
}

/** The gRPC name of a code: PERMISSION_DENIED for Code.PermissionDenied. */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** An error from a call, in words: "PERMISSION_DENIED: principal 'v' ... lacks ...". */
export function describe(error: unknown): string {
  const e = ConnectError.from(error);
  return `${codeName(e.code)}: ${e.rawMessage || "(no message)"}`;
}

export function isCode(error: unknown, code: Code): boolean {
  return ConnectError.from(error).code === code;
}

export { Code };
