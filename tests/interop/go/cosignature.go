package main

// A c2sp.org/tlog-cosignature (cosignature/v1) verifier for golang.org/x/mod/sumdb/note, written
// from the spec (as torchwood's CosignatureVerifier is): key ID = SHA-256(name ‖ 0x0A ‖ 0x04 ‖
// key)[:4]; signature = 8-byte big-endian timestamp ‖ Ed25519 over
// "cosignature/v1\ntime <timestamp>\n" ‖ checkpoint text.

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

const algCosignatureV1 = 4

type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	m := fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, msg)
	return ed25519.Verify(v.key, []byte(m), sig[8:])
}

func newCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	hash, err1 := strconv.ParseUint(hash16, 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(key64)
	if !ok1 || !ok2 || len(hash16) != 8 || err1 != nil || err2 != nil || name == "" || len(key) != 33 {
		return nil, errors.New("malformed cosignature verifier key")
	}
	if key[0] != algCosignatureV1 {
		return nil, errors.New("not a cosignature/v1 key")
	}
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	if binary.BigEndian.Uint32(h[:4]) != uint32(hash) {
		return nil, errors.New("cosignature verifier key hash does not match")
	}
	return &cosignatureVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}
