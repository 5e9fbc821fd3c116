"""The HTTP bridge: speaks the Arterys inference protocol and streams each request to a gRPC worker.

Thin and stateless: no model code, no pixel decoding. See bridge.app (routes), bridge.inference (one
request), bridge.translate (pure HTTP <-> contract translation), arterys_http.multipart (streaming parser).
"""
