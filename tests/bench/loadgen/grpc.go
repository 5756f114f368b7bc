// The gRPC mode of loadgen, for `make bench-gateway`: closed-loop unary calls with raw request bytes.
//
//	go run ./tests/bench/loadgen -grpc 127.0.0.1:50051 -method /auditlog.v1.AuditLogService/RecordEvent \
//	    -templates FILE -placeholder ID -c 64 -d 10s -warmup 3s -conns 4 [-batch 500] -H "authorization: Bearer KEY"
//
// FILE holds one serialised RecordEventRequest per line, base64; each call patches the placeholder
// (an event_id of fixed width) with a fresh id of the same width, so every event is new and the
// client spends almost nothing per call. With -batch N, N such events are wrapped as the repeated
// field 1 of a RecordEventsRequest. Calls are spread over -conns HTTP/2 connections, so a server
// running several worker processes on one SO_REUSEPORT port gets load on each.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec sends and receives the bytes as they are: requests are pre-serialised protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type grpcOptions struct {
	target, method, templates, placeholder, prefix string
	workers, conns, batch                          int
	rate                                           float64
	duration, warmup                               time.Duration
	headers                                        []string
}

func readTemplates(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("%s: a line is not base64: %v", path, err)
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no templates in %s", path)
	}
	return out, scanner.Err()
}

// maker builds unique-id requests for one worker.
type maker struct {
	templates   [][]byte
	placeholder []byte
	prefix      string
	count       int
}

func (m *maker) event() []byte {
	m.count++
	id := fmt.Sprintf("%s%x", m.prefix, m.count)
	if len(id) > len(m.placeholder) {
		panic("event id longer than the placeholder: use a shorter -prefix")
	}
	id += strings.Repeat("-", len(m.placeholder)-len(id))
	return bytes.Replace(m.templates[m.count%len(m.templates)], m.placeholder, []byte(id), 1)
}

func (m *maker) request(batch int) []byte {
	if batch == 0 {
		return m.event()
	}
	var buf []byte
	for i := 0; i < batch; i++ {
		body := m.event()
		buf = append(buf, 0x0a)
		buf = binary.AppendUvarint(buf, uint64(len(body)))
		buf = append(buf, body...)
	}
	return buf
}

// tally counts calls, and the latencies and error codes of those started in the measured window.
type tally struct {
	latencies []float64
	errs      map[string]int
	calls     int
}

func newTally() *tally { return &tally{errs: map[string]int{}} }

func (t *tally) add(started, windowStart time.Time, ms float64, err error) {
	t.calls++
	if started.Before(windowStart) {
		return
	}
	if err != nil {
		t.errs[status.Code(err).String()]++
	} else {
		t.latencies = append(t.latencies, ms)
	}
}

func (t *tally) merge(other *tally) {
	t.latencies = append(t.latencies, other.latencies...)
	for code, n := range other.errs {
		t.errs[code] += n
	}
	t.calls += other.calls
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func runGRPC(o grpcOptions) error {
	templates, err := readTemplates(o.templates)
	if err != nil {
		return err
	}
	md := metadata.MD{}
	for _, h := range o.headers {
		if k, v, ok := strings.Cut(h, ":"); ok {
			md.Append(strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v))
		}
	}
	var conns []*grpc.ClientConn
	for i := 0; i < o.conns; i++ {
		conn, err := grpc.NewClient(o.target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
				grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
			// Distinct user agents keep grpc-go from sharing one connection between them.
			grpc.WithUserAgent(fmt.Sprintf("auditlog-loadgen/%d", i)))
		if err != nil {
			return err
		}
		conn.Connect()
		conns = append(conns, conn)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	begin := time.Now()
	windowStart := begin.Add(o.warmup)
	windowEnd := windowStart.Add(o.duration)
	// call sends one request; it returns when it started, how long it took (ms) and its error.
	call := func(conn *grpc.ClientConn, req []byte) (time.Time, float64, error) {
		started := time.Now()
		var reply []byte
		callCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		err := conn.Invoke(callCtx, o.method, &req, &reply)
		return started, float64(time.Since(started).Microseconds()) / 1000, err
	}
	var mu sync.Mutex
	all := newTally()
	var wg sync.WaitGroup
	if o.rate > 0 {
		// Open loop: a call starts every 1/rate s whatever the earlier ones are doing.
		m := &maker{templates: templates, placeholder: []byte(o.placeholder), prefix: o.prefix + "r-"}
		interval := time.Duration(float64(time.Second) / o.rate)
		next := time.Now()
		for calls := 0; time.Now().Before(windowEnd); calls++ {
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
			next = next.Add(interval)
			req, conn := m.request(o.batch), conns[calls%len(conns)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				started, ms, err := call(conn, req)
				mu.Lock()
				all.add(started, windowStart, ms, err)
				mu.Unlock()
			}()
		}
	}
	for w := 0; w < o.workers && o.rate == 0; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			m := &maker{templates: templates, placeholder: []byte(o.placeholder), prefix: fmt.Sprintf("%sw%d-", o.prefix, w)}
			conn := conns[w%len(conns)]
			mine := newTally() // merged once at the end: no lock per call
			for time.Now().Before(windowEnd) {
				started, ms, err := call(conn, m.request(o.batch))
				mine.add(started, windowStart, ms, err)
			}
			mu.Lock()
			all.merge(mine)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	cpu := cpuSeconds()
	latencies, errs, total := all.latencies, all.errs, all.calls
	sort.Float64s(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	events := len(latencies)
	if o.batch > 0 {
		events *= o.batch
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": len(latencies), "errors": errs, "seconds": o.duration.Seconds(), "total_calls": total,
		"rps": float64(len(latencies)) / o.duration.Seconds(), "events_per_s": float64(events) / o.duration.Seconds(),
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
		"cpu_s": cpu, "elapsed_s": time.Since(begin).Seconds(),
	})
}
