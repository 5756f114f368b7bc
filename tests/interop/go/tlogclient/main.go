// Command tlogclient reads one auditlog log over the C2SP tlog-tiles HTTP API the way any outside
// client would: with filippo.io/torchwood's tlog client (TileFetcher + Client.Entries), which
// authenticates every tile it reads against the signed checkpoint. auditlog's code is not used.
//
//	tlogclient -url http://127.0.0.1:8080/logs/audit.events.p0/ -vkey <note verifier key> \
//	    -origin auditlog.local/audit.events.p0 [-key <API key>]
//
// It fetches `checkpoint`, opens it with golang.org/x/mod/sumdb/note and the verifier key, checks
// its origin, then iterates every entry of the tree with Client.Entries (each entry's record hash
// is checked against hash tiles that are checked against the checkpoint's root). It prints
// {"size": N, "root": b64, "entries": [b64...]} on stdout and exits 0, or prints the error on
// stderr and exits 1: a flipped byte in any tile or entry bundle must end here.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type keyTransport struct{ key string }

func (t keyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.key != "" {
		req.Header.Set("Authorization", "Bearer "+t.key)
	}
	return http.DefaultTransport.RoundTrip(req)
}

type output struct {
	Size    int64    `json:"size"`
	Root    []byte   `json:"root"`
	Entries [][]byte `json:"entries"`
}

func main() {
	base := flag.String("url", "", "the log's base URL (ends in /logs/<log id>/)")
	vkey := flag.String("vkey", "", "the log's note verifier key")
	origin := flag.String("origin", "", "the checkpoint origin the log must have")
	key := flag.String("key", "", "an API key (sent as Authorization: Bearer)")
	flag.Parse()
	if err := run(*base, *vkey, *origin, *key); err != nil {
		fmt.Fprintln(os.Stderr, "tlogclient:", err)
		os.Exit(1)
	}
}

func run(base, vkey, origin, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fetcher, err := torchwood.NewTileFetcher(base,
		torchwood.WithHTTPClient(&http.Client{Transport: keyTransport{key}, Timeout: 30 * time.Second}))
	if err != nil {
		return err
	}
	signed, err := fetcher.ReadEndpoint(ctx, "checkpoint")
	if err != nil {
		return fmt.Errorf("reading the checkpoint: %w", err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("opening the checkpoint: %w", err)
	}
	checkpoint, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return fmt.Errorf("parsing the checkpoint: %w", err)
	}
	if checkpoint.Origin != origin {
		return fmt.Errorf("checkpoint origin %q, want %q", checkpoint.Origin, origin)
	}
	tree := tlog.Tree{N: checkpoint.N, Hash: checkpoint.Hash}
	client, err := torchwood.NewClient(fetcher)
	if err != nil {
		return err
	}
	out := output{Size: tree.N, Root: tree.Hash[:], Entries: [][]byte{}}
	for int64(len(out.Entries)) < tree.N {
		before := len(out.Entries)
		for i, entry := range client.Entries(ctx, tree, int64(len(out.Entries))) {
			if i != int64(len(out.Entries)) {
				return fmt.Errorf("entry %d came when %d was next", i, len(out.Entries))
			}
			out.Entries = append(out.Entries, append([]byte(nil), entry...))
		}
		if err := client.Err(); err != nil {
			return fmt.Errorf("reading entries from %d: %w", before, err)
		}
		if len(out.Entries) == before {
			return fmt.Errorf("no progress past entry %d of %d", before, tree.N)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
