// Command oracle runs Kubeflow Katib's own file metrics collector parser – the exported CollectObservationLog of
// github.com/kubeflow/katib/pkg/metricscollector/v1beta1/file-metricscollector (file-metricscollector.go) at the
// version pinned in go.mod – on a log and prints the ObservationLog rows it returns. It is trialtail's judge: what
// this program prints is what Katib's collector would report. Nothing of Katib is copied here; it is imported.
//
// Single mode (one log file):
//
//	oracle -m 'accuracy;loss' [-f RE]... [-filters 'RE1;RE2'] -format TEXT|JSON -path FILE
//
// prints one JSON line per row, {"name":…,"value":…,"time_stamp":…}, and exits 0; or prints {"error":…,"kind":…}
// and exits 1 when Katib returns an error (kind "error") or panics (kind "panic", e.g. an invalid filter: Katib
// ignores regexp.Compile's error and calls a method on the nil *Regexp).
//
// -m is split exactly as Katib's collector main splits its -m flag (cmd/metricscollector/v1beta1/
// file-metricscollector/main.go, reportMetrics: strings.Split on ";" when non-empty, nothing trimmed or dropped).
// Each -f is one filter, taken verbatim; -filters is split on ";" as main.go splits its -f flag. -format is passed
// verbatim as a commonv1beta1.FileFormat, so "text" is Katib's "format must be set TEXT or JSON" error.
//
// Batch mode (many cases, one process):
//
//	oracle -batch < cases.jsonl
//
// reads one JSON object per line, {"id":…, "metrics":[…], "filters":[…], "format":"TEXT", "content_b64":"…"}
// ("content" may replace "content_b64" for text that is valid UTF-8; any other key such as "why" is ignored) and
// answers one JSON line per case, in order: {"id":…, "rows":[{"name","value","time_stamp"},…]} or
// {"id":…, "error":"…", "kind":"error"|"panic"}. A line that is not a case is answered with kind "input".
//
// Strings that are not valid UTF-8 (Katib keeps a text line's bytes as they are) are printed with U+FFFD in place
// of each bad byte, as encoding/json does, plus the exact bytes in "name_b64"/"value_b64"; "wire_error" is set
// when protobuf refuses to marshal the ObservationLog (a proto3 string must be UTF-8): that report would fail
// in Katib's collector at ReportObservationLog.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	commonv1beta1 "github.com/kubeflow/katib/pkg/apis/controller/common/v1beta1"
	filemc "github.com/kubeflow/katib/pkg/metricscollector/v1beta1/file-metricscollector"
)

// Row is one MetricLog of the ObservationLog, flattened.
type Row struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	TimeStamp string `json:"time_stamp"`
	NameB64   string `json:"name_b64,omitempty"`
	ValueB64  string `json:"value_b64,omitempty"`
}

// Case is one batch input line.
type Case struct {
	ID         json.RawMessage `json:"id"`
	Metrics    []string        `json:"metrics"`
	Filters    []string        `json:"filters"`
	Format     string          `json:"format"`
	Content    *string         `json:"content"`
	ContentB64 *string         `json:"content_b64"`
}

// Answer is one batch output line.
type Answer struct {
	ID        json.RawMessage `json:"id"`
	Rows      []Row           `json:"rows,omitempty"`
	Error     string          `json:"error,omitempty"`
	Kind      string          `json:"kind,omitempty"`
	WireError string          `json:"wire_error,omitempty"`
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// collect calls Katib and turns its answer into rows, an error or a recovered panic.
func collect(path string, metrics, filters []string, format string) (rows []Row, wireErr string, errText, kind string) {
	defer func() {
		if p := recover(); p != nil {
			rows, wireErr, errText, kind = nil, "", fmt.Sprint(p), "panic"
		}
	}()
	olog, err := filemc.CollectObservationLog(path, metrics, filters, commonv1beta1.FileFormat(format))
	if err != nil {
		return nil, "", err.Error(), "error"
	}
	if _, err := proto.Marshal(olog); err != nil {
		wireErr = err.Error()
	}
	rows = make([]Row, 0, len(olog.MetricLogs))
	for _, l := range olog.MetricLogs {
		r := Row{Name: l.GetMetric().GetName(), Value: l.GetMetric().GetValue(), TimeStamp: l.GetTimeStamp()}
		if !utf8.ValidString(r.Name) {
			r.NameB64 = base64.StdEncoding.EncodeToString([]byte(r.Name))
		}
		if !utf8.ValidString(r.Value) {
			r.ValueB64 = base64.StdEncoding.EncodeToString([]byte(r.Value))
		}
		rows = append(rows, r)
	}
	return rows, wireErr, "", ""
}

func version() string {
	katib := "?"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/kubeflow/katib" {
				katib = d.Version
			}
		}
	}
	return fmt.Sprintf("katib %s, %s", katib, runtime.Version())
}

func main() {
	var (
		metricsFlag = flag.String("m", "", "metric names separated by ';' (split as Katib's collector main does); the first is the objective")
		filterFlags multi
		filtersFlag = flag.String("filters", "", "filters separated by ';' (split as Katib's collector main splits -f)")
		format      = flag.String("format", "TEXT", "TEXT or JSON, passed verbatim")
		path        = flag.String("path", "", "the log file")
		batch       = flag.Bool("batch", false, "read cases as JSON lines from stdin, answer one JSON line each")
		showVersion = flag.Bool("version", false, "print Katib's module version and the Go version, then exit")
		verbose     = flag.Bool("v", false, "keep Katib's klog output on stderr")
	)
	flag.Var(&filterFlags, "f", "one filter, verbatim (repeatable)")
	flag.Parse()
	if *showVersion {
		fmt.Println(version())
		return
	}
	if !*verbose {
		// Katib warns through klog for every metric line without a timestamp; keep stderr for our own errors.
		klog.LogToStderr(false)
		klog.SetOutput(io.Discard)
	}
	if *batch {
		os.Exit(runBatch(os.Stdin, os.Stdout))
	}

	var metrics []string
	if *metricsFlag != "" {
		metrics = strings.Split(*metricsFlag, ";")
	}
	filters := []string(filterFlags)
	if *filtersFlag != "" {
		filters = append(filters, strings.Split(*filtersFlag, ";")...)
	}
	if *path == "" || len(metrics) == 0 {
		fmt.Fprintln(os.Stderr, "oracle: -path and -m are required (or -batch)")
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	rows, wireErr, errText, kind := collect(*path, metrics, filters, *format)
	if kind != "" {
		_ = enc.Encode(map[string]string{"error": errText, "kind": kind})
		w.Flush()
		os.Exit(1)
	}
	for _, r := range rows {
		_ = enc.Encode(r)
	}
	if wireErr != "" {
		fmt.Fprintf(os.Stderr, "oracle: Katib could not send this ObservationLog: %s\n", wireErr)
	}
	w.Flush()
}

func runBatch(in io.Reader, stdout io.Writer) int {
	dir, err := os.MkdirTemp("", "katib-oracle-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "metrics.log")

	w := bufio.NewWriterSize(stdout, 1<<16)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	r := bufio.NewReaderSize(in, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			_ = enc.Encode(answer(line, file))
			// One answer per case as soon as it is known: a caller may write the next case after reading this one.
			w.Flush()
		}
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "oracle: reading stdin:", err)
			return 1
		}
	}
}

func answer(line []byte, file string) Answer {
	var c Case
	if err := json.Unmarshal(line, &c); err != nil {
		return Answer{Error: "not a case: " + err.Error(), Kind: "input"}
	}
	var content []byte
	switch {
	case c.ContentB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*c.ContentB64)
		if err != nil {
			return Answer{ID: c.ID, Error: "content_b64: " + err.Error(), Kind: "input"}
		}
		content = b
	case c.Content != nil:
		content = []byte(*c.Content)
	default:
		return Answer{ID: c.ID, Error: "a case needs content_b64 or content", Kind: "input"}
	}
	if err := os.WriteFile(file, content, 0o600); err != nil {
		return Answer{ID: c.ID, Error: err.Error(), Kind: "input"}
	}
	rows, wireErr, errText, kind := collect(file, c.Metrics, c.Filters, c.Format)
	return Answer{ID: c.ID, Rows: rows, Error: errText, Kind: kind, WireError: wireErr}
}
