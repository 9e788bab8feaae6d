// Command usweb is the testbed's own small web server. It serves static files;
// POST /upload hashes the whole request body and logs it, so tests can prove
// that each server received every byte; POST /transfer is a small transaction
// service that appends a numbered receipt to a ledger (GET /ledger), so tests
// can prove that a request in flight at a failover took effect exactly once.
//
// Behind nginx it listens on 127.0.0.1:8081 for the POST locations and
// /ledger; without nginx it serves everything on :80. Its replies carry
// nothing specific to the host, so the primary and the backup answer byte for
// byte alike (apart from the Date header), as the gateway's reply comparison
// expects — except under /own/, served from -own, where a test may put
// content that differs between the servers on purpose.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":80", "address to listen on")
	root := flag.String("root", ".", "directory of static files")
	logPath := flag.String("log", "", "file to append one line per request to (default: none)")
	ledgerPath := flag.String("ledger", "", "the transfers' ledger file (default: \"ledger\" beside -log, or in memory without -log)")
	own := flag.String("own", "", "directory served under /own/ (default: none)")
	flag.Parse()

	var logw io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			log.Fatalf("usweb: %v", err)
		}
		defer f.Close()
		logw = f
	}

	if *ledgerPath == "" && *logPath != "" {
		*ledgerPath = filepath.Join(filepath.Dir(*logPath), "ledger")
	}
	l, err := openLedger(*ledgerPath)
	if err != nil {
		log.Fatalf("usweb: %v", err)
	}
	defer l.Close()

	s := newServer(*root, logw, l)
	s.own = http.Dir(*own)
	srv := &http.Server{
		Handler:     s,
		ConnContext: s.connContext,
		IdleTimeout: 120 * time.Second, // as nginx's keepalive_timeout in the testbed
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("usweb: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "usweb: %v\n", err)
		os.Exit(1)
	}
}
