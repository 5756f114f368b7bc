// loadgen: a closed-loop load generator for `make bench-query` (HTTP) and `make bench-gateway`
// (gRPC, see grpc.go).
//
//	go run ./tests/bench/loadgen -urls FILE -c 50 -d 20s -H "Authorization: Bearer KEY"
//
// Each of -c workers sends the URLs of FILE (one per line, cycled from a random start) back to
// back over keep-alive connections for -d, then prints one JSON line: requests, errors (non-2xx
// or transport), throughput, and latency percentiles in milliseconds.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	urlsFile := flag.String("urls", "", "file with one URL per line")
	workers := flag.Int("c", 50, "concurrent requests")
	duration := flag.Duration("d", 20*time.Second, "how long to send")
	var hdrs headers
	flag.Var(&hdrs, "H", "header 'Name: value' (repeatable)")
	grpcTarget := flag.String("grpc", "", "gRPC mode: host:port of the server")
	method := flag.String("method", "", "gRPC mode: full method name, /package.Service/Method")
	templates := flag.String("templates", "", "gRPC mode: file of base64 serialised requests, one per line")
	placeholder := flag.String("placeholder", "", "gRPC mode: the fixed-width event_id replaced per event")
	prefix := flag.String("prefix", "", "gRPC mode: prefix of generated event ids")
	batch := flag.Int("batch", 0, "gRPC mode: events per call (a RecordEventsRequest); 0 = one request per call")
	conns := flag.Int("conns", 4, "gRPC mode: HTTP/2 connections to spread the calls over")
	rate := flag.Float64("rate", 0, "gRPC mode: open loop, this many calls per second (instead of -c closed loops)")
	warmup := flag.Duration("warmup", 3*time.Second, "gRPC mode: calls before this are not measured")
	flag.Parse()
	if *grpcTarget != "" {
		err := runGRPC(grpcOptions{
			target: *grpcTarget, method: *method, templates: *templates, placeholder: *placeholder, prefix: *prefix,
			workers: *workers, conns: *conns, batch: *batch, rate: *rate, duration: *duration, warmup: *warmup, headers: hdrs,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(2)
		}
		return
	}
	f, err := os.Open(*urlsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	var urls []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" {
			urls = append(urls, line)
		}
	}
	if len(urls) == 0 {
		fmt.Fprintln(os.Stderr, "error: no URLs in", *urlsFile)
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *workers, MaxConnsPerHost: *workers},
	}
	var mu sync.Mutex
	var latencies []float64
	errors := 0
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			i := rng.Intn(len(urls))
			var mine []float64
			bad := 0
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", urls[i%len(urls)], nil)
				for _, h := range hdrs {
					if k, v, ok := strings.Cut(h, ":"); ok {
						req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
					}
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						bad++
					}
				} else {
					bad++
				}
				mine = append(mine, float64(time.Since(start).Microseconds())/1000)
				i++
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += bad
			mu.Unlock()
		}(int64(w) + 1)
	}
	wg.Wait()
	sort.Float64s(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	out := map[string]any{
		"requests": len(latencies), "errors": errors, "seconds": duration.Seconds(),
		"rps":    float64(len(latencies)) / duration.Seconds(),
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
