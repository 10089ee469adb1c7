// Go's own net/rpc/jsonrpc against arpc, both ways (run by tests/go/run.sh):
//
//	interop client ADDR   Go's jsonrpc client calls an arpc server (examples/kv_server):
//	                      1,000 pipelined KV.Put/KV.Get through client.Go, an error reply and
//	                      missing names, each as Go's client reports them, and the built-in
//	                      arpc.methods as a []string.
//	interop server        Go's jsonrpc.ServeConn serves Arith on 127.0.0.1 (a free port,
//	                      printed as "listening tcp://127.0.0.1:PORT") until stdin closes.
package main

import (
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"strings"
)

const calls = 1000

type PutArgs struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type GetArgs struct {
	Key string `json:"key"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func runClient(addr string) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	client := jsonrpc.NewClient(conn)
	defer client.Close()

	// Pipelined: every call is written before any answer is read.
	done := make(chan *rpc.Call, 2*calls)
	oks := make([]bool, calls)
	for i := 0; i < calls; i++ {
		client.Go("KV.Put", PutArgs{Key: fmt.Sprintf("go%d", i), Value: fmt.Sprintf("v%d", i)}, &oks[i], done)
	}
	for i := 0; i < calls; i++ {
		c := <-done
		if c.Error != nil {
			fail("KV.Put: %v", c.Error)
		}
	}
	for i, ok := range oks {
		if !ok {
			fail("KV.Put %d: result %v, want true", i, ok)
		}
	}
	values := make([]string, calls)
	for i := 0; i < calls; i++ {
		client.Go("KV.Get", GetArgs{Key: fmt.Sprintf("go%d", i)}, &values[i], done)
	}
	for i := 0; i < calls; i++ {
		if c := <-done; c.Error != nil {
			fail("KV.Get: %v", c.Error)
		}
	}
	for i, v := range values {
		if v != fmt.Sprintf("v%d", i) {
			fail("KV.Get go%d = %q", i, v)
		}
	}
	fmt.Printf("ok - Go client: %d pipelined KV.Put and %d KV.Get answered as Go expects\n", calls, calls)

	// An error reply is an rpc.ServerError with the handler's text; missing names, Go's texts.
	var v string
	expectServerError := func(method string, args any, want string) {
		err := client.Call(method, args, &v)
		var se rpc.ServerError
		if !errors.As(err, &se) || string(se) != want {
			fail("%s: error %#v, want ServerError(%q)", method, err, want)
		}
		fmt.Printf("ok - Go client: %s -> ServerError(%q)\n", method, want)
	}
	expectServerError("KV.Get", GetArgs{Key: "never-put"}, "no such key")
	expectServerError("KV.Nope", GetArgs{Key: "k"}, "rpc: can't find method KV.Nope")
	expectServerError("Nope.Get", GetArgs{Key: "k"}, "rpc: can't find service Nope.Get")

	// The connection is still good after errors (a protocol slip would have shut Go's client).
	if err := client.Call("KV.Get", GetArgs{Key: "go7"}, &v); err != nil || v != "v7" {
		fail("KV.Get after errors: %v %q", err, v)
	}
	fmt.Println("ok - Go client: the connection still serves after the errors")

	// The built-in arpc.methods answers a JSON-RPC peer with a JSON array of the names.
	var names []string
	if err := client.Call("arpc.methods", nil, &names); err != nil {
		fail("arpc.methods: %v", err)
	}
	if got := strings.Join(names, " "); got != "arpc.methods arpc.stats kv.put kv.get KV.Put KV.Get" {
		fail("arpc.methods = %q", names)
	}
	fmt.Printf("ok - Go client: arpc.methods -> %q\n", names)
}

// Arith is what the arpc client calls on Go's server.
type Arith struct{}

type Args struct{ A, B int }

func (Arith) Multiply(args Args, reply *int) error { *reply = args.A * args.B; return nil }

func (Arith) Fail(args Args, reply *int) error { return errors.New("boom: " + fmt.Sprint(args.A)) }

func (Arith) Echo(s string, reply *string) error { *reply = s; return nil }

func runServer() {
	srv := rpc.NewServer()
	if err := srv.Register(Arith{}); err != nil {
		fail("register: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("listening tcp://%s\n", ln.Addr())
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeCodec(jsonrpc.NewServerCodec(conn))
		}
	}()
	buf := make([]byte, 1)
	for {
		if _, err := os.Stdin.Read(buf); err != nil {
			return
		}
	}
}

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "client":
		runClient(os.Args[2])
	case len(os.Args) == 2 && os.Args[1] == "server":
		runServer()
	default:
		fail("usage: interop client ADDR | interop server")
	}
}
