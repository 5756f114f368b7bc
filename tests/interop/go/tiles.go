package main

// c2sp.org/tlog-tiles against golang.org/x/mod/sumdb/tlog (tile height 8), for
// tests/interop/test_go_interop.py:
//
//	{"op":"tiles", "leaves":[b64 entry], "tile_sizes":[[old, new], ...]}
//	    -> {"tiles": [[{"path", "data"}, ...], ...]}: for each pair, tlog.NewTiles(8, old, new)
//	       with each tile's data from tlog.ReadTileData over the tree's stored hashes
//	       (tlog.StoredHashes of the entries appended in order), paths in the C2SP form.
//	{"op":"tiles-check", "tree_size":N, "tree_root":b64, "resources":{path: b64 bytes}}
//	    -> {"ok", "entries", "error"}: reads every leaf hash of the tree (N, root) through
//	       tlog.TileHashReader, which fetches the hash tiles from "resources" and authenticates
//	       them against the root, then reads every entry bundle and checks that each entry's
//	       record hash is the leaf hash at its index and that no byte is left over; with
//	       "flips":[{"path", "offset"}], the same check again once per flipped byte
//	       -> "flip_errors" (each "" if the tampered tiles passed, which must never happen).
//
// C2SP paths are Go's tlog.Tile.Path without the height element ("tile/8/0/001.p/3" is
// "tile/0/001.p/3"), and level -1 ("data") is "entries".

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

type tilesRequest struct {
	TileSizes [][2]int64        `json:"tile_sizes,omitempty"`
	TreeSize  int64             `json:"tree_size,omitempty"`
	TreeRoot  []byte            `json:"tree_root,omitempty"`
	Resources map[string][]byte `json:"resources,omitempty"`
	// Flips: each [path, byte offset] is one more check, of the resources with that one byte
	// of that resource flipped (xor 0x01); its outcome goes to FlipErrors ("" if it passed).
	Flips []flip `json:"flips,omitempty"`
}

type flip struct {
	Path   string `json:"path"`
	Offset int    `json:"offset"`
}

type tileOut struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
}

type tilesResponse struct {
	Tiles   [][]tileOut `json:"tiles,omitempty"`
	Entries *int64      `json:"entries,omitempty"`
	// FlipErrors: one per requested flip, Go's error, or "" when the tampered tiles passed.
	FlipErrors []string `json:"flip_errors,omitempty"`
}

func c2spPath(t tlog.Tile) string {
	if t.L == -1 {
		return "tile/entries/" + strings.TrimPrefix(t.Path(), "tile/8/data/")
	}
	return "tile/" + strings.TrimPrefix(t.Path(), "tile/8/")
}

func doTiles(leaves [][]byte, sizes [][2]int64) (*tilesResponse, error) {
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("stored hash %d is not in a tree of %d stored hashes", x, len(stored))
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, data := range leaves {
		hashes, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			return nil, err
		}
		stored = append(stored, hashes...)
	}
	resp := &tilesResponse{}
	for _, pair := range sizes {
		if pair[0] < 0 || pair[0] > pair[1] || pair[1] > int64(len(leaves)) {
			return nil, fmt.Errorf("sizes %v are not 0 <= old <= new <= %d", pair, len(leaves))
		}
		out := []tileOut{}
		for _, t := range tlog.NewTiles(tileHeight, pair[0], pair[1]) {
			data, err := tlog.ReadTileData(t, reader)
			if err != nil {
				return nil, err
			}
			out = append(out, tileOut{Path: c2spPath(t), Data: data})
		}
		resp.Tiles = append(resp.Tiles, out)
	}
	return resp, nil
}

// mapTiles serves tiles from a map of C2SP paths, as a tile server would.
type mapTiles map[string][]byte

func (m mapTiles) Height() int { return tileHeight }

func (m mapTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, ok := m[c2spPath(t)]
		if !ok {
			return nil, fmt.Errorf("%s: not found", c2spPath(t))
		}
		out[i] = data
	}
	return out, nil
}

func (m mapTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// flipChecks runs checkTiles once per flip, each on the resources with one byte changed.
func flipChecks(req *tilesRequest) ([]string, error) {
	out := make([]string, len(req.Flips))
	for i, f := range req.Flips {
		orig, ok := req.Resources[f.Path]
		if !ok || f.Offset < 0 || f.Offset >= len(orig) {
			return nil, fmt.Errorf("flip %d: no byte %d in %q", i, f.Offset, f.Path)
		}
		bad := append([]byte(nil), orig...)
		bad[f.Offset] ^= 0x01
		tampered := *req
		tampered.Resources = make(map[string][]byte, len(req.Resources))
		for p, d := range req.Resources {
			tampered.Resources[p] = d
		}
		tampered.Resources[f.Path] = bad
		if _, err := checkTiles(&tampered); err != nil {
			out[i] = err.Error()
		}
	}
	return out, nil
}

func checkTiles(req *tilesRequest) (int64, error) {
	var root tlog.Hash
	if len(req.TreeRoot) != len(root) {
		return 0, errors.New("tree_root must be 32 bytes")
	}
	copy(root[:], req.TreeRoot)
	tree := tlog.Tree{N: req.TreeSize, Hash: root}
	res := mapTiles(req.Resources)
	indexes := make([]int64, tree.N)
	for i := range indexes {
		indexes[i] = tlog.StoredHashIndex(0, int64(i))
	}
	hashes, err := tlog.TileHashReader(tree, res).ReadHashes(indexes)
	if err != nil {
		return 0, err
	}
	var n int64
	for start := int64(0); start < tree.N; start += 1 << tileHeight {
		w := min(tree.N-start, 1<<tileHeight)
		t := tlog.Tile{H: tileHeight, L: -1, N: start >> tileHeight, W: int(w)}
		bundle, ok := res[c2spPath(t)]
		if !ok {
			return n, fmt.Errorf("%s: not found", c2spPath(t))
		}
		for i := start; i < start+w; i++ {
			if len(bundle) < 2 {
				return n, fmt.Errorf("%s: ends before entry %d", c2spPath(t), i)
			}
			l := int(binary.BigEndian.Uint16(bundle))
			if len(bundle)-2 < l {
				return n, fmt.Errorf("%s: entry %d claims %d bytes, %d left", c2spPath(t), i, l, len(bundle)-2)
			}
			entry := bundle[2 : 2+l]
			bundle = bundle[2+l:]
			if tlog.RecordHash(entry) != hashes[i] {
				return n, fmt.Errorf("%s: entry %d does not hash to leaf %d", c2spPath(t), i, i)
			}
			n++
		}
		if len(bundle) != 0 {
			return n, fmt.Errorf("%s: %d bytes left over", c2spPath(t), len(bundle))
		}
	}
	return n, nil
}
