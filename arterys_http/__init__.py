"""The Arterys inference protocol as it travels over HTTP, in pure standard library.

Everything that both ends of the HTTP hop must agree on lives here, once: the streaming
multipart/related parser (`multipart`), the content types (`media`), the request and response writers
(`writer`), the hashes part and the rules a result must satisfy (`protocol`). The bridge, the test tool
and the benchmarks import it; it imports nothing of theirs, nor numpy, pydicom or gRPC.
"""
