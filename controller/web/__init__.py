"""controller.web: the web admin page, served by the controller on its own
HTTP port (--web-listen; TLS with the controller's certificate unless
--insecure-plaintext-dev).

The page speaks virtplane.v1 like any client, through gRPC-Web served in
process by sonora over the controller's own servicers and through the same
server interceptors as the gRPC port: authentication and roles, and errors
translated to status codes once. Its front end is web/ (TypeScript, built by
`make web` into web/dist).

- grpc_web   sonora's gRPC-Web application, with the grpc.aio interceptors
- context    the servicer context of its calls (token, abort, write)
- assets     the built page's files (index.html, app.js, app.css)
- server     the HTTP port: uvicorn in the controller's event loop
"""
