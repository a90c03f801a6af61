// netcheck is the real-node tests' pod image: an HTTP server and a tiny client.
//
//	netcheck serve [ADDR]      answer GET / with "netcheck <hostname>", GET /lookup?name=N
//	                           with N's addresses (one per line), until SIGTERM
//	netcheck get URL           print the body of GET URL (exit 1 on any error)
//	netcheck lookup NAME       print NAME's addresses through the pod's resolver
//	netcheck write FILE TEXT   write TEXT to FILE and print it back
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func lookup(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupHost(ctx, name)
}

func serve(addr string) error {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "netcheck %s\n", host)
	})
	mux.HandleFunc("/lookup", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := lookup(r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, strings.Join(addrs, "\n"))
	})
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		_ = server.Close()
	}()
	fmt.Printf("netcheck serving on %s\n", addr)
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(url string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	_, err = os.Stdout.Write(body)
	return err
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: netcheck serve [ADDR] | get URL | lookup NAME | write FILE TEXT")
	}
	switch {
	case args[0] == "serve" && len(args) <= 2:
		addr := ":8080"
		if len(args) == 2 {
			addr = args[1]
		}
		return serve(addr)
	case args[0] == "get" && len(args) == 2:
		return get(args[1])
	case args[0] == "lookup" && len(args) == 2:
		addrs, err := lookup(args[1])
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(addrs, "\n"))
		return nil
	case args[0] == "write" && len(args) == 3:
		if err := os.WriteFile(args[1], []byte(args[2]), 0o644); err != nil {
			return err
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		fmt.Println(string(data))
		return nil
	}
	return fmt.Errorf("unknown command: %q", args)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netcheck:", err)
		os.Exit(1)
	}
}
