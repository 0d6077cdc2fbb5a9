// Command dbclient talks to a running katib-db-manager through Katib's own generated gRPC client
// (github.com/kubeflow/katib/pkg/apis/manager/v1beta1, api_grpc.pb.go; health from pkg/apis/manager/health).
//
//	dbclient -addr 127.0.0.1:PORT health                     # exit 0 when Check answers SERVING
//	dbclient -addr … report -trial T [-chunk N] < rows.jsonl # rows {"name","value","time_stamp"}, N rows a call
//	dbclient -addr … get -trial T [-metric M] [-start S] [-end E]   # rows as JSON lines, in the order returned
//	dbclient -addr … delete -trial T
//	dbclient -addr … selftest                                # the checks recorded in tests/katib/README.md
//
// Errors print {"error":…} on stdout and exit 1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	health "github.com/kubeflow/katib/pkg/apis/manager/health"
	api "github.com/kubeflow/katib/pkg/apis/manager/v1beta1"
)

// Row is one MetricLog, flattened (the same shape as the oracle's rows).
type Row struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	TimeStamp string `json:"time_stamp"`
}

func fail(format string, a ...any) {
	b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, a...)})
	fmt.Println(string(b))
	os.Exit(1)
}

func dial(addr string) *grpc.ClientConn {
	// The DB manager sends up to 2 GiB (cmd/db-manager/v1beta1/main.go: grpc.MaxSendMsgSize(1<<31-1)); a gRPC
	// client's default receive limit is 4 MiB, which 50 000 rows already come close to.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	return conn
}

func toLogs(rows []Row) []*api.MetricLog {
	logs := make([]*api.MetricLog, len(rows))
	for i, r := range rows {
		logs[i] = &api.MetricLog{TimeStamp: r.TimeStamp, Metric: &api.Metric{Name: r.Name, Value: r.Value}}
	}
	return logs
}

func fromLogs(ol *api.ObservationLog) []Row {
	rows := make([]Row, 0, len(ol.GetMetricLogs()))
	for _, l := range ol.GetMetricLogs() {
		rows = append(rows, Row{Name: l.GetMetric().GetName(), Value: l.GetMetric().GetValue(), TimeStamp: l.GetTimeStamp()})
	}
	return rows
}

type client struct {
	db api.DBManagerClient
	hc health.HealthClient
}

func (c client) report(trial string, rows []Row, chunk int) error {
	if chunk <= 0 {
		chunk = len(rows)
	}
	for start := 0; start < len(rows) || start == 0; start += chunk {
		end := min(start+chunk, len(rows))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := c.db.ReportObservationLog(ctx, &api.ReportObservationLogRequest{
			TrialName: trial, ObservationLog: &api.ObservationLog{MetricLogs: toLogs(rows[start:end])},
		})
		cancel()
		if err != nil {
			return fmt.Errorf("rows %d..%d: %w", start, end, err)
		}
		if end == len(rows) {
			break
		}
	}
	return nil
}

func (c client) get(trial, metric, start, end string) ([]Row, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reply, err := c.db.GetObservationLog(ctx, &api.GetObservationLogRequest{
		TrialName: trial, MetricName: metric, StartTime: start, EndTime: end,
	})
	if err != nil {
		return nil, err
	}
	return fromLogs(reply.GetObservationLog()), nil
}

func (c client) delete(trial string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.db.DeleteObservationLog(ctx, &api.DeleteObservationLogRequest{TrialName: trial})
	return err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6789", "the DB manager, host:port")
	flag.Parse()
	if flag.NArg() == 0 {
		fail("usage: dbclient -addr HOST:PORT health|report|get|delete|selftest [flags]")
	}
	conn := dial(*addr)
	defer conn.Close()
	c := client{db: api.NewDBManagerClient(conn), hc: health.NewHealthClient(conn)}

	sub := flag.NewFlagSet(flag.Arg(0), flag.ExitOnError)
	trial := sub.String("trial", "", "trial name")
	metric := sub.String("metric", "", "get: only this metric")
	start := sub.String("start", "", "get: start time (RFC 3339)")
	end := sub.String("end", "", "get: end time (RFC 3339)")
	chunk := sub.Int("chunk", 0, "report: rows per ReportObservationLog call (0: all in one)")
	_ = sub.Parse(flag.Args()[1:])

	switch flag.Arg(0) {
	case "health":
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.hc.Check(ctx, &health.HealthCheckRequest{Service: "grpc.health.v1.Health"})
		if err != nil {
			fail("health: %v", err)
		}
		if resp.GetStatus() != health.HealthCheckResponse_SERVING {
			fail("health: %v", resp.GetStatus())
		}
		fmt.Println(`{"status":"SERVING"}`)
	case "report":
		var rows []Row
		dec := json.NewDecoder(bufio.NewReader(os.Stdin))
		for {
			var r Row
			if err := dec.Decode(&r); err == io.EOF {
				break
			} else if err != nil {
				fail("stdin: %v", err)
			}
			rows = append(rows, r)
		}
		if err := c.report(*trial, rows, *chunk); err != nil {
			fail("report: %v", err)
		}
		fmt.Printf("{\"reported\":%d}\n", len(rows))
	case "get":
		rows, err := c.get(*trial, *metric, *start, *end)
		if err != nil {
			fail("get: %v", err)
		}
		w := bufio.NewWriter(os.Stdout)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			_ = enc.Encode(r)
		}
		w.Flush()
	case "delete":
		if err := c.delete(*trial); err != nil {
			fail("delete: %v", err)
		}
		fmt.Println(`{"deleted":true}`)
	case "selftest":
		if !selftest(c) {
			os.Exit(1)
		}
	default:
		fail("unknown command %q", flag.Arg(0))
	}
}

// selftest reports and reads back rows that show what the DB manager keeps and returns; it prints one line per
// check, "ok" or "FAIL", plus "note" lines with what was observed. The trial names are unique per run.
func selftest(c client) bool {
	ok := true
	run := fmt.Sprintf("selftest-%d", time.Now().UnixNano())
	check := func(name string, good bool, format string, a ...any) {
		status := "ok  "
		if !good {
			status = "FAIL"
			ok = false
		}
		fmt.Printf("%s %s: %s\n", status, name, fmt.Sprintf(format, a...))
	}
	note := func(name string, format string, a ...any) {
		fmt.Printf("note %s: %s\n", name, fmt.Sprintf(format, a...))
	}

	// 1. 50 000 rows in chunks of 4000 (trialtail's CHUNK_ROWS), all at Katib's zero time, values 0..49999.
	const n = 50000
	rows := make([]Row, n)
	for i := range rows {
		name := "loss"
		if i%2 == 1 {
			name = "accuracy"
		}
		rows[i] = Row{Name: name, Value: fmt.Sprint(i), TimeStamp: "0001-01-01T00:00:00Z"}
	}
	t0 := time.Now()
	err := c.report(run+"-chunks", rows, 4000)
	check("report 50000 rows in chunks of 4000", err == nil, "%v (%v)", err, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	got, err := c.get(run+"-chunks", "", "", "")
	check("get 50000 rows back", err == nil && len(got) == n, "%d rows, err %v (%v)", len(got), err,
		time.Since(t0).Round(time.Millisecond))
	inOrder, firstOut := 0, -1
	for i, r := range got {
		if r.Value == fmt.Sprint(i) {
			inOrder++
		} else if firstOut < 0 {
			firstOut = i
		}
	}
	note("order of 50000 rows with equal time", "%d of %d at their reported position (first elsewhere: %d); "+
		"GetObservationLog orders by time only (pkg/db/v1beta1/postgres/postgres.go: ORDER BY time)", inOrder, len(got), firstOut)
	if len(got) > 0 {
		note("zero time read back", "%q", got[0].TimeStamp)
	}
	got, err = c.get(run+"-chunks", "accuracy", "", "")
	check("get one metric", err == nil && len(got) == n/2, "%d rows, err %v", len(got), err)

	// 2. The same 50 000 rows in one call, as Katib's own collector sends them (cmd/metricscollector/…/main.go).
	for _, size := range []int{n, 16383, 16384} {
		t0 = time.Now()
		e := c.report(fmt.Sprintf("%s-one-%d", run, size), rows[:size], 0)
		note(fmt.Sprintf("report %d rows in one call", size), "err = %v (%v)", e, time.Since(t0).Round(time.Millisecond))
	}

	// Rows whose times alternate between two values: does ORDER BY time keep the report order among equals?
	const m = 20000
	alt := make([]Row, m)
	for i := range alt {
		ts := "0001-01-01T00:00:00Z"
		if i%3 == 0 {
			ts = "2024-03-04T17:55:08Z"
		}
		alt[i] = Row{Name: "loss", Value: fmt.Sprint(i), TimeStamp: ts}
	}
	err = c.report(run+"-alt", alt, 4000)
	got, _ = c.get(run+"-alt", "", "", "")
	last := map[string]int{}
	swaps := 0
	for _, r := range got {
		var v int
		fmt.Sscan(r.Value, &v)
		if p, seen := last[r.TimeStamp]; seen && v < p {
			swaps++
		}
		last[r.TimeStamp] = v
	}
	note("order among equal times, 20000 rows of two alternating times", "err %v, %d rows back, %d rows "+
		"earlier than the row before them with the same time", err, len(got), swaps)

	// 3. The unavailable sentinel, as Katib's collector sends it (file-metricscollector.go, newObservationLog).
	err = c.report(run+"-unavailable", []Row{{Name: "accuracy", Value: "unavailable", TimeStamp: "0001-01-01T00:00:00Z"}}, 0)
	check("report the unavailable row", err == nil, "%v", err)
	got, err = c.get(run+"-unavailable", "", "", "")
	check("get the unavailable row", err == nil && len(got) == 1 && got[0].Value == "unavailable", "%v %v", got, err)

	// 4. Timestamps: what is stored and returned for each shape Katib's collector can send.
	stamps := []string{
		"2024-03-04T17:55:08Z",
		"2024-03-04T17:55:08.1Z",
		"2024-03-04T17:55:08.123456Z",
		"2024-03-04T17:55:08.1234564Z",
		"2024-03-04T17:55:08.1234565Z",
		"2024-03-04T17:55:08.1234575Z",
		"2024-03-04T17:55:08.123456789Z",
		"2024-03-04T17:55:08.999999999Z",
		"2024-03-04T17:55:08,5Z",
		"2024-03-04T17:55:08.000000000Z",
		"2024-03-04T17:55:08+01:00",
		"2024-03-04T17:55:08.5-07:30",
		"2024-03-04T7:55:08Z",
		"2024-03-04T17:55:08+24:00",
		"2021-12-02T05:27:27.000028721Z",
		"1969-12-31T23:59:58.999999995Z",
		"0001-01-01T00:00:00Z",
		"9999-12-31T23:59:59.9999995Z",
		"2024-03-04T17:55:08+23:60",
		"2024-03-04T17:55:08.123456789012Z",
		"0000-01-01T00:00:00Z",
		"10000-01-01T00:00:00Z",
		"31690708-07-05T01:46:40Z",
		"-31688736537-03-10T22:13:20Z",
		"1918-01-30T18:32:33.000028721Z",
	}
	for i, ts := range stamps {
		trial := fmt.Sprintf("%s-ts-%d", run, i)
		err := c.report(trial, []Row{{Name: "loss", Value: "1", TimeStamp: ts}}, 0)
		if err != nil {
			note("timestamp "+ts, "report error: %v", err)
			continue
		}
		got, err := c.get(trial, "", "", "")
		if err != nil || len(got) != 1 {
			note("timestamp "+ts, "get: %v %v", got, err)
			continue
		}
		note("timestamp "+ts, "returned %q", got[0].TimeStamp)
	}
	// Rows with distinct times come back in time order, not in report order.
	mixed := []Row{
		{Name: "loss", Value: "late", TimeStamp: "2024-03-04T17:55:09Z"},
		{Name: "loss", Value: "early", TimeStamp: "2024-03-04T18:55:08+02:00"},
		{Name: "loss", Value: "none", TimeStamp: "0001-01-01T00:00:00Z"},
	}
	_ = c.report(run+"-mixed", mixed, 0)
	got, _ = c.get(run+"-mixed", "", "", "")
	var order []string
	for _, r := range got {
		order = append(order, r.Value+"@"+r.TimeStamp)
	}
	note("order of rows with distinct times", "%s", strings.Join(order, ", "))
	got, err = c.get(run+"-mixed", "", "2024-03-04T17:00:00Z", "")
	note("start_time filter 2024-03-04T17:00:00Z", "%d rows, err %v", len(got), err)

	// 5. Values and names the database may refuse.
	for _, r := range []Row{
		{Name: "loss", Value: "1\x00", TimeStamp: "0001-01-01T00:00:00Z"},
		{Name: strings.Repeat("n", 255), Value: "1", TimeStamp: "0001-01-01T00:00:00Z"},
		{Name: strings.Repeat("n", 256), Value: "1", TimeStamp: "0001-01-01T00:00:00Z"},
		{Name: "loss", Value: strings.Repeat("9", 1<<20), TimeStamp: "0001-01-01T00:00:00Z"},
		{Name: "loss", Value: "1", TimeStamp: ""},
		{Name: "loss", Value: "1", TimeStamp: "yesterday"},
	} {
		what := fmt.Sprintf("row name %d bytes, value %d bytes %q…, time %q", len(r.Name), len(r.Value),
			r.Value[:min(len(r.Value), 3)], r.TimeStamp)
		err := c.report(run+"-odd", []Row{r}, 0)
		note(what, "err = %v", err)
	}
	err = c.report(run+"-empty", nil, 0)
	note("an empty ObservationLog", "err = %v", err)
	err = c.report(run+"-mixed-empty-time", []Row{{Name: "loss", Value: "1", TimeStamp: ""},
		{Name: "loss", Value: "2", TimeStamp: "0001-01-01T00:00:00Z"}}, 0)
	got, _ = c.get(run+"-mixed-empty-time", "", "", "")
	note("rows with an empty time among others", "err = %v, %d of 2 stored", err, len(got))

	// 6. Delete, so repeated runs leave nothing behind.
	for _, t := range []string{run + "-chunks", run + "-one-50000", run + "-one-16383", run + "-alt",
		run + "-unavailable", run + "-mixed", run + "-odd"} {
		if err := c.delete(t); err != nil {
			check("delete "+t, false, "%v", err)
		}
	}
	got, _ = c.get(run+"-chunks", "", "", "")
	check("deleted", len(got) == 0, "%d rows left", len(got))
	return ok
}
