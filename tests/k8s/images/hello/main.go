// Command hello is the e2e's container image for a pod that runs in
// containerd beside the VM pods: it serves "hello from <hostname>" on port
// 8080 and logs one line when it listens.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	host, _ := os.Hostname()
	l, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("hello: listening on :8080 as", host)
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	}))
}
