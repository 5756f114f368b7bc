// Command interop is an independent reference for auditlog's pure core, built only from Go's
// golang.org/x/mod/sumdb/note and github.com/transparency-dev/merkle (rfc6962, compact, proof).
// tests/interop/test_go_interop.py drives it; outside reviewers can drive it by hand.
//
// It reads one JSON value on stdin: a request object, or an array of them, and writes the
// response (or the array of responses, in the same order) as JSON on stdout. Byte strings are
// standard base64, as Go's encoding/json writes []byte. Requests:
//
//	{"op":"note-generate", "name":N}       -> {"skey", "vkey"}      (note.GenerateKey)
//	{"op":"note-sign", "skey":S, "text":T}  -> {"msg"}               (note.NewSigner + note.Sign)
//	{"op":"note-verify", "vkey":V, "msg":M} -> {"ok", "text", "error", "error_type"}
//	                                           (note.NewVerifier + note.Open; "msg_b64" instead
//	                                           of "msg" passes raw bytes, e.g. invalid UTF-8)
//	{"op":"cosig-verify", "vkey":V, "msg":M} -> {"ok", "text", "error"}
//	                                           (a witness's cosignature/v1 key, C2SP
//	                                           tlog-cosignature, as a note.Verifier + note.Open;
//	                                           "vkey2" optionally names the log's key too)
//	{"op":"merkle", "leaves":[b64 leaf data], ...} -> see merkleRequest / merkleResponse
//	{"op":"tiles", ...}, {"op":"tiles-check", ...}   -> C2SP tlog-tiles against
//	                                           golang.org/x/mod/sumdb/tlog, see tiles.go
//
// Any failure to process a request is reported as {"error": "..."} in its response; the
// process exits non-zero only if stdin is not valid JSON or stdout cannot be written.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type request struct {
	Op string `json:"op"`

	// note-*
	Name string `json:"name,omitempty"`
	SKey string `json:"skey,omitempty"`
	VKey string `json:"vkey,omitempty"`
	// VKey2 is the log's key for cosig-verify.
	VKey2 string `json:"vkey2,omitempty"`
	Text  string `json:"text,omitempty"`
	Msg   string `json:"msg,omitempty"`
	// MsgB64, when set, replaces Msg: a note as raw bytes, which may be invalid UTF-8.
	MsgB64 []byte `json:"msg_b64,omitempty"`

	merkleRequest
	tilesRequest
}

// merkleRequest describes one tree (the leaf data, hashed here with RFC 6962 leaf hashing) and
// what to compute or check against it. Every tree size named must be <= len(Leaves); a tree of
// size n is the first n leaves.
type merkleRequest struct {
	Leaves [][]byte `json:"leaves,omitempty"`
	// Roots asks for the root of every prefix, sizes 0..len(Leaves).
	Roots bool `json:"roots,omitempty"`
	// Inclusion asks for Go-generated inclusion proofs, each pair is [index, size].
	Inclusion [][2]uint64 `json:"inclusion,omitempty"`
	// Consistency asks for Go-generated consistency proofs, each pair is [size1, size2].
	Consistency [][2]uint64 `json:"consistency,omitempty"`
	// VerifyInclusion / VerifyConsistency check foreign proofs against the leaf hashes and
	// roots computed here.
	VerifyInclusion   []inclusionCheck   `json:"verify_inclusion,omitempty"`
	VerifyConsistency []consistencyCheck `json:"verify_consistency,omitempty"`
}

type inclusionCheck struct {
	Index uint64   `json:"index"`
	Size  uint64   `json:"size"`
	Proof [][]byte `json:"proof"`
}

type consistencyCheck struct {
	Size1 uint64   `json:"size1"`
	Size2 uint64   `json:"size2"`
	Proof [][]byte `json:"proof"`
}

type response struct {
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`

	SKey string `json:"skey,omitempty"`
	VKey string `json:"vkey,omitempty"`
	Msg  string `json:"msg,omitempty"`
	OK   *bool  `json:"ok,omitempty"`
	Text string `json:"text,omitempty"`

	*merkleResponse
	*tilesResponse
}

type merkleResponse struct {
	LeafHashes  [][]byte   `json:"leaf_hashes"`
	Roots       [][]byte   `json:"roots,omitempty"`
	Inclusion   [][][]byte `json:"inclusion,omitempty"`
	Consistency [][][]byte `json:"consistency,omitempty"`
	// One entry per check: "" when the proof verified, else Go's error text.
	VerifyInclusion   []string `json:"verify_inclusion,omitempty"`
	VerifyConsistency []string `json:"verify_consistency,omitempty"`
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fatal(err)
	}
	in = bytes.TrimSpace(in)
	var out any
	if len(in) > 0 && in[0] == '[' {
		var reqs []request
		if err := json.Unmarshal(in, &reqs); err != nil {
			fatal(err)
		}
		resps := make([]response, len(reqs))
		for i := range reqs {
			resps[i] = handle(&reqs[i])
		}
		out = resps
	} else {
		var req request
		if err := json.Unmarshal(in, &req); err != nil {
			fatal(err)
		}
		out = handle(&req)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "interop:", err)
	os.Exit(2)
}

func fail(err error) response {
	return response{Error: err.Error(), ErrorType: fmt.Sprintf("%T", err)}
}

func handle(req *request) response {
	switch req.Op {
	case "note-generate":
		skey, vkey, err := note.GenerateKey(rand.Reader, req.Name)
		if err != nil {
			return fail(err)
		}
		return response{SKey: skey, VKey: vkey}
	case "note-sign":
		s, err := note.NewSigner(req.SKey)
		if err != nil {
			return fail(err)
		}
		msg, err := note.Sign(&note.Note{Text: req.Text}, s)
		if err != nil {
			return fail(err)
		}
		return response{Msg: string(msg)}
	case "note-verify":
		ok := false
		v, err := note.NewVerifier(req.VKey)
		if err != nil {
			r := fail(err)
			r.OK = &ok
			return r
		}
		msg := []byte(req.Msg)
		if req.MsgB64 != nil {
			msg = req.MsgB64
		}
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			r := fail(err)
			r.OK = &ok
			return r
		}
		ok = true
		return response{OK: &ok, Text: n.Text}
	case "cosig-verify":
		ok := false
		v, err := newCosignatureVerifier(req.VKey)
		if err != nil {
			r := fail(err)
			r.OK = &ok
			return r
		}
		verifiers := []note.Verifier{v}
		if req.VKey2 != "" {
			lv, err := note.NewVerifier(req.VKey2)
			if err != nil {
				r := fail(err)
				r.OK = &ok
				return r
			}
			verifiers = append(verifiers, lv)
		}
		n, err := note.Open([]byte(req.Msg), note.VerifierList(verifiers...))
		if err != nil {
			r := fail(err)
			r.OK = &ok
			return r
		}
		// note.Open succeeds when any known key signed; every key given must have.
		if len(n.Sigs) != len(verifiers) {
			r := fail(fmt.Errorf("%d of %d keys signed", len(n.Sigs), len(verifiers)))
			r.OK = &ok
			return r
		}
		ok = true
		return response{OK: &ok, Text: n.Text}
	case "merkle":
		m, err := doMerkle(&req.merkleRequest)
		if err != nil {
			return fail(err)
		}
		return response{merkleResponse: m}
	case "tiles":
		t, err := doTiles(req.Leaves, req.TileSizes)
		if err != nil {
			return fail(err)
		}
		return response{tilesResponse: t}
	case "tiles-check":
		ok := false
		n, err := checkTiles(&req.tilesRequest)
		if err != nil {
			r := fail(err)
			r.OK = &ok
			r.tilesResponse = &tilesResponse{Entries: &n}
			return r
		}
		flips, err := flipChecks(&req.tilesRequest)
		if err != nil {
			return fail(err)
		}
		ok = true
		return response{OK: &ok, tilesResponse: &tilesResponse{Entries: &n, FlipErrors: flips}}
	default:
		return fail(fmt.Errorf("unknown op %q", req.Op))
	}
}

var hasher = rfc6962.DefaultHasher

func doMerkle(req *merkleRequest) (*merkleResponse, error) {
	n := uint64(len(req.Leaves))
	leafHashes := make([][]byte, n)
	for i, data := range req.Leaves {
		leafHashes[i] = hasher.HashLeaf(data)
	}

	// Roots of every prefix, from a compact range grown one leaf at a time.
	roots := make([][]byte, n+1)
	roots[0] = hasher.EmptyRoot()
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	for i, h := range leafHashes {
		if err := cr.Append(h, nil); err != nil {
			return nil, err
		}
		r, err := cr.GetRootHash(nil)
		if err != nil {
			return nil, err
		}
		roots[i+1] = r
	}

	// Every perfect subtree of the full tree: levels[l][i] is node (l, i). A perfect node
	// lies inside every prefix that covers it, so these serve proofs for all sizes <= n.
	levels := [][][]byte{leafHashes}
	for l := 0; len(levels[l]) > 1; l++ {
		below := levels[l]
		above := make([][]byte, len(below)/2)
		for i := range above {
			above[i] = hasher.HashChildren(below[2*i], below[2*i+1])
		}
		levels = append(levels, above)
	}
	build := func(nodes proof.Nodes) ([][]byte, error) {
		hashes := make([][]byte, len(nodes.IDs))
		for i, id := range nodes.IDs {
			if int(id.Level) >= len(levels) || id.Index >= uint64(len(levels[id.Level])) {
				return nil, fmt.Errorf("node %+v is not in a tree of %d leaves", id, n)
			}
			hashes[i] = levels[id.Level][id.Index]
		}
		p, err := nodes.Rehash(hashes, hasher.HashChildren)
		if err != nil {
			return nil, err
		}
		if p == nil {
			p = [][]byte{}
		}
		return p, nil
	}
	checkSize := func(size uint64) error {
		if size > n {
			return fmt.Errorf("tree size %d is more than the %d leaves given", size, n)
		}
		return nil
	}

	resp := &merkleResponse{LeafHashes: leafHashes}
	if req.Roots {
		resp.Roots = roots
	}
	for _, pair := range req.Inclusion {
		index, size := pair[0], pair[1]
		if err := checkSize(size); err != nil {
			return nil, err
		}
		nodes, err := proof.Inclusion(index, size)
		if err != nil {
			return nil, err
		}
		p, err := build(nodes)
		if err != nil {
			return nil, err
		}
		resp.Inclusion = append(resp.Inclusion, p)
	}
	for _, pair := range req.Consistency {
		size1, size2 := pair[0], pair[1]
		if err := checkSize(size2); err != nil {
			return nil, err
		}
		nodes, err := proof.Consistency(size1, size2)
		if err != nil {
			return nil, err
		}
		p, err := build(nodes)
		if err != nil {
			return nil, err
		}
		resp.Consistency = append(resp.Consistency, p)
	}
	for _, c := range req.VerifyInclusion {
		if err := checkSize(c.Size); err != nil {
			return nil, err
		}
		msg := ""
		if c.Index >= c.Size {
			msg = fmt.Sprintf("index %d is not below size %d", c.Index, c.Size)
		} else if err := proof.VerifyInclusion(hasher, c.Index, c.Size, leafHashes[c.Index], c.Proof, roots[c.Size]); err != nil {
			msg = err.Error()
		}
		resp.VerifyInclusion = append(resp.VerifyInclusion, msg)
	}
	for _, c := range req.VerifyConsistency {
		if err := checkSize(c.Size2); err != nil {
			return nil, err
		}
		msg := ""
		if c.Size1 > c.Size2 {
			msg = fmt.Sprintf("size1 %d > size2 %d", c.Size1, c.Size2)
		} else if err := proof.VerifyConsistency(hasher, c.Size1, c.Size2, c.Proof, roots[c.Size1], roots[c.Size2]); err != nil {
			msg = err.Error()
		}
		resp.VerifyConsistency = append(resp.VerifyConsistency, msg)
	}
	return resp, nil
}
