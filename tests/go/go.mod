module arpc.test/jsonrpc

go 1.19
