// Package deploy checks the deployment files under deploy/: every YAML and
// JSON file parses, and the invariants that tie them together hold (probes,
// resource limits, one image, names and selectors that match, the compose
// services, dashboard queries that name existing views and run on a real
// clickhouse-server and on chDB). `docker compose config` and kubectl are not
// needed.
package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/entrowatch/entrowatch/internal/chdb"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

const image = "ghcr.io/entrowatch/entrowatch" // the one image repository everywhere

// doc is one parsed YAML document or JSON file.
type doc struct {
	file string
	v    map[string]any
}

// load parses every YAML (all documents) and JSON file under dir.
func load(t *testing.T, dir string) map[string][]doc {
	t.Helper()
	out := map[string][]doc{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(".", path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			dec := yaml.NewDecoder(bytes.NewReader(b))
			for i := 0; ; i++ {
				var v map[string]any
				err := dec.Decode(&v)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return fmt.Errorf("%s: document %d: %w", rel, i+1, err)
				}
				if v != nil {
					out[rel] = append(out[rel], doc{rel, v})
				}
			}
		case ".json":
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			out[rel] = append(out[rel], doc{rel, v})
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// get walks v along keys (map keys, or "[i]" is not needed here) and returns
// the value or nil.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, keys ...string) string { s, _ := get(v, keys...).(string); return s }

func list(v any, keys ...string) []any { l, _ := get(v, keys...).([]any); return l }

func TestEveryFileParses(t *testing.T) {
	docs := load(t, ".")
	for _, want := range []string{
		"compose/compose.yaml", "compose/entrowatch.yaml", "compose/prometheus.yml",
		"compose/grafana/provisioning/datasources/datasources.yaml",
		"compose/grafana/provisioning/dashboards/dashboards.yaml",
		"k8s/kustomization.yaml", "k8s/deployment.yaml", "k8s/configmap.yaml", "k8s/secret.yaml",
		"k8s/service.yaml", "k8s/pdb.yaml", "k8s/scaledobject.yaml", "k8s/job-migrate.yaml",
		"grafana/entrowatch.json",
	} {
		require.NotEmpty(t, docs[want], "%s missing or empty", want)
	}
}

// k8sObjects returns the manifests kustomization.yaml lists, by kind/name.
func k8sObjects(t *testing.T) map[string]doc {
	t.Helper()
	docs := load(t, "k8s")
	kust := docs[filepath.Join("k8s", "kustomization.yaml")][0]
	objs := map[string]doc{}
	listed := map[string]bool{"k8s/kustomization.yaml": true}
	for _, r := range list(kust.v, "resources") {
		f := filepath.Join("k8s", r.(string))
		listed[f] = true
		require.NotEmpty(t, docs[f], "kustomization lists %s, which is missing", f)
		for _, d := range docs[f] {
			kind, name := str(d.v, "kind"), str(d.v, "metadata", "name")
			require.NotEmpty(t, str(d.v, "apiVersion"), "%s: apiVersion", f)
			require.NotEmpty(t, kind, "%s: kind", f)
			require.NotEmpty(t, name, "%s: metadata.name", f)
			key := kind + "/" + name
			require.NotContains(t, objs, key, "%s defined twice", key)
			objs[key] = d
		}
	}
	for f := range docs {
		require.True(t, listed[f], "%s is not listed in k8s/kustomization.yaml resources", f)
	}
	require.Equal(t, image, str(list(kust.v, "images")[0], "name"), "kustomization images[0].name")
	return objs
}

// external are objects the manifests use but the operator creates (see
// docs/deploy.md): the estimator artifact and the Kafka cluster CA.
var external = map[string]bool{"ConfigMap/entrowatch-estimator": true, "Secret/entrowatch-kafka-ca": true}

func TestKubernetes(t *testing.T) {
	objs := k8sObjects(t)
	dep, ok := objs["Deployment/entrowatch"]
	require.True(t, ok, "Deployment/entrowatch")
	pod := get(dep.v, "spec", "template")
	podLabels := get(pod, "metadata", "labels").(map[string]any)
	require.Equal(t, get(dep.v, "spec", "selector", "matchLabels"), podLabels, "Deployment selector vs pod labels")

	cfg := runConfigOf(t, objs)
	drain, err := time.ParseDuration(str(cfg, "stream", "drain_timeout"))
	require.NoError(t, err, "stream.drain_timeout in the ConfigMap")
	grace := get(pod, "spec", "terminationGracePeriodSeconds")
	require.NotNil(t, grace, "terminationGracePeriodSeconds")
	require.Greater(t, time.Duration(grace.(int))*time.Second, drain, "grace period must exceed stream.drain_timeout so SIGTERM can drain")

	checkPod(t, objs, dep.file, pod, true)
	job, ok := objs["Job/entrowatch-migrate"]
	require.True(t, ok, "Job/entrowatch-migrate")
	checkPod(t, objs, job.file, get(job.v, "spec", "template"), false)

	// One alarm dispatcher (two would announce an episode twice), never two
	// at once during a rollout, against the ClickHouse and Kafka the
	// replicas use; probes on its metrics port.
	al, ok := objs["Deployment/entrowatch-alarms"]
	require.True(t, ok, "Deployment/entrowatch-alarms")
	require.Equal(t, 1, get(al.v, "spec", "replicas"))
	require.Equal(t, "Recreate", str(al.v, "spec", "strategy", "type"))
	alPod := get(al.v, "spec", "template")
	checkPod(t, objs, al.file, alPod, false)
	alC := list(alPod, "spec", "containers")[0]
	args := fmt.Sprint(get(alC, "args"))
	require.Contains(t, args, str(cfg, "clickhouse", "conn", "dsn"), "the dispatcher reads the ClickHouse the replicas write")
	require.Contains(t, args, fmt.Sprint(list(cfg, "kafka", "brokers")[0]))
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		require.Contains(t, containerPorts(alC), fmt.Sprint(get(alC, probe, "httpGet", "port")), "%s port", probe)
	}

	// Service and PodDisruptionBudget select the Deployment's pods.
	svc := objs["Service/entrowatch"]
	require.NotNil(t, svc.v, "Service/entrowatch")
	requireSelects(t, "Service/entrowatch", get(svc.v, "spec", "selector"), podLabels)
	ports := containerPorts(get(pod, "spec", "containers").([]any)[0])
	for _, p := range list(svc.v, "spec", "ports") {
		tp := get(p, "targetPort")
		require.Contains(t, ports, fmt.Sprint(tp), "Service targetPort %v is not a container port", tp)
	}
	pdb := objs["PodDisruptionBudget/entrowatch"]
	require.NotNil(t, pdb.v, "PodDisruptionBudget/entrowatch")
	requireSelects(t, "PodDisruptionBudget", get(pdb.v, "spec", "selector", "matchLabels"), podLabels)
	require.True(t, get(pdb.v, "spec", "maxUnavailable") != nil || get(pdb.v, "spec", "minAvailable") != nil, "PDB needs maxUnavailable or minAvailable")

	// The autoscaler scales the Deployment on the lag of the consumed topic
	// and group, up to the partition count.
	so := objs["ScaledObject/entrowatch"]
	require.NotNil(t, so.v, "ScaledObject/entrowatch")
	require.Equal(t, "entrowatch", str(so.v, "spec", "scaleTargetRef", "name"))
	require.Nil(t, get(dep.v, "spec", "replicas"), "the autoscaler owns the count: a fixed one is reset on every kubectl apply")
	trig := list(so.v, "spec", "triggers")[0]
	require.Equal(t, "kafka", str(trig, "type"))
	require.Equal(t, str(cfg, "source", "topic"), str(trig, "metadata", "topic"))
	require.Equal(t, str(cfg, "source", "group"), str(trig, "metadata", "consumerGroup"))
	require.Contains(t, list(cfg, "kafka", "brokers"), str(trig, "metadata", "bootstrapServers"))
	require.NotEmpty(t, str(trig, "metadata", "lagThreshold"))
	maxR, minR := get(so.v, "spec", "maxReplicaCount").(int), get(so.v, "spec", "minReplicaCount").(int)
	require.GreaterOrEqual(t, minR, 2, "at least two replicas for availability")
	require.LessOrEqual(t, maxR, get(cfg, "partitions").(int), "replicas beyond the partitions sit idle")
	auth := "TriggerAuthentication/" + str(trig, "authenticationRef", "name")
	require.Contains(t, objs, auth)
	for _, ref := range list(objs[auth].v, "spec", "secretTargetRef") {
		requireSecretKey(t, objs, str(ref, "name"), str(ref, "key"))
	}
}

// checkPod checks the containers of a pod template: the image, resources,
// hardening, probes (for long-running pods) and that every referenced
// ConfigMap/Secret exists.
func checkPod(t *testing.T, objs map[string]doc, file string, pod any, serving bool) {
	t.Helper()
	cs := list(pod, "spec", "containers")
	require.NotEmpty(t, cs, "%s: containers", file)
	for _, c := range cs {
		name := str(c, "name")
		img := str(c, "image")
		require.True(t, strings.HasPrefix(img, image+":"), "%s/%s: image %q, want %s:TAG", file, name, img, image)
		require.NotEqual(t, image+":latest", img, "%s/%s: pin a version, not latest", file, name)
		for _, r := range []string{"cpu", "memory"} {
			require.NotNil(t, get(c, "resources", "limits", r), "%s/%s: resources.limits.%s", file, name, r)
			require.NotNil(t, get(c, "resources", "requests", r), "%s/%s: resources.requests.%s", file, name, r)
		}
		require.Equal(t, false, get(c, "securityContext", "allowPrivilegeEscalation"), "%s/%s: allowPrivilegeEscalation", file, name)
		require.Equal(t, true, get(pod, "spec", "securityContext", "runAsNonRoot"), "%s: runAsNonRoot", file)
		// Pod Security "restricted" admits only pods with a seccomp profile.
		require.Equal(t, "RuntimeDefault", str(pod, "spec", "securityContext", "seccompProfile", "type"), "%s: seccompProfile", file)
		if serving {
			ports := containerPorts(c)
			for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz/ingest", "startupProbe": "/healthz"} {
				p := get(c, probe, "httpGet")
				require.NotNil(t, p, "%s/%s: %s", file, name, probe)
				require.Equal(t, path, str(p, "path"), "%s/%s: %s path", file, name, probe)
				require.Contains(t, ports, fmt.Sprint(get(p, "port")), "%s/%s: %s port is not a container port", file, name, probe)
			}
		}
		for _, e := range list(c, "envFrom") {
			if n := str(e, "secretRef", "name"); n != "" {
				require.Contains(t, objs, "Secret/"+n, "%s: envFrom secret %s", file, n)
			}
			if n := str(e, "configMapRef", "name"); n != "" {
				require.Contains(t, objs, "ConfigMap/"+n, "%s: envFrom configmap %s", file, n)
			}
		}
	}
	for _, v := range list(pod, "spec", "volumes") {
		if n := str(v, "configMap", "name"); n != "" && !external["ConfigMap/"+n] {
			require.Contains(t, objs, "ConfigMap/"+n, "%s: volume configmap %s", file, n)
		}
		if n := str(v, "secret", "secretName"); n != "" && !external["Secret/"+n] {
			require.Contains(t, objs, "Secret/"+n, "%s: volume secret %s", file, n)
		}
	}
}

func containerPorts(c any) []string {
	var out []string
	for _, p := range list(c, "ports") {
		out = append(out, str(p, "name"), fmt.Sprint(get(p, "containerPort")))
	}
	return out
}

func requireSelects(t *testing.T, what string, sel any, labels map[string]any) {
	t.Helper()
	m, ok := sel.(map[string]any)
	require.True(t, ok && len(m) > 0, "%s: empty selector", what)
	for k, v := range m {
		require.Equal(t, v, labels[k], "%s: selector %s=%v does not match the pod labels", what, k, v)
	}
}

func requireSecretKey(t *testing.T, objs map[string]doc, name, key string) {
	t.Helper()
	if external["Secret/"+name] {
		return
	}
	s, ok := objs["Secret/"+name]
	require.True(t, ok, "Secret/%s is referenced but not defined", name)
	require.NotNil(t, get(s.v, "stringData", key), "Secret/%s has no key %s", name, key)
}

// runConfigOf parses the entrowatch.yaml held by the ConfigMap.
func runConfigOf(t *testing.T, objs map[string]doc) map[string]any {
	t.Helper()
	cm, ok := objs["ConfigMap/entrowatch-config"]
	require.True(t, ok, "ConfigMap/entrowatch-config")
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(str(cm.v, "data", "entrowatch.yaml")), &cfg))
	return cfg
}

func TestKubernetesSecretsHaveEveryEnvTheConfigNames(t *testing.T) {
	objs := k8sObjects(t)
	cfg := runConfigOf(t, objs)
	for _, path := range [][]string{{"kafka", "sasl", "password_env"}, {"clickhouse", "password_env"}, {"http", "token_env"}} {
		env := str(cfg, path...)
		require.NotEmpty(t, env, "%v", path)
		requireSecretKey(t, objs, "entrowatch", env)
	}
}

func TestCompose(t *testing.T) {
	docs := load(t, "compose")
	c := docs[filepath.Join("compose", "compose.yaml")][0].v
	svcs := get(c, "services").(map[string]any)
	for _, s := range []string{"kafka", "clickhouse", "migrate", "entrowatch", "prometheus", "grafana"} {
		require.Contains(t, svcs, s, "compose service %s", s)
	}
	// Kafka in KRaft mode: no ZooKeeper anywhere, combined broker+controller.
	for name, s := range svcs {
		require.NotContains(t, strings.ToLower(name+str(s, "image")), "zookeeper")
	}
	kenv := get(svcs["kafka"], "environment").(map[string]any)
	require.Contains(t, kenv["KAFKA_PROCESS_ROLES"], "controller")
	require.NotEmpty(t, kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"])
	require.NotContains(t, kenv, "KAFKA_ZOOKEEPER_CONNECT")
	// KRaft formats its storage with CLUSTER_ID: 16 bytes, base64url without padding.
	id, err := base64.RawURLEncoding.DecodeString(fmt.Sprint(kenv["CLUSTER_ID"]))
	require.NoError(t, err, "CLUSTER_ID %v", kenv["CLUSTER_ID"])
	require.Len(t, id, 16, "CLUSTER_ID is a UUID")

	ew := svcs["entrowatch"]
	require.GreaterOrEqual(t, get(ew, "deploy", "replicas").(int), 2, "entrowatch replicas")
	require.NotNil(t, get(ew, "deploy", "resources", "limits", "memory"), "entrowatch memory limit")
	require.NotNil(t, get(ew, "healthcheck", "test"), "entrowatch healthcheck")
	require.Contains(t, fmt.Sprint(get(ew, "healthcheck", "test")), "/readyz")
	for _, s := range []string{"kafka", "clickhouse"} {
		require.Equal(t, "service_healthy", str(ew, "depends_on", s, "condition"), "entrowatch waits for %s", s)
		require.NotNil(t, get(svcs[s], "healthcheck", "test"), "%s healthcheck", s)
	}
	require.Equal(t, "service_completed_successfully", str(ew, "depends_on", "migrate", "condition"))
	for _, s := range []string{"entrowatch", "migrate"} {
		require.True(t, strings.HasPrefix(str(svcs[s], "image"), image+":"), "compose %s image", s)
	}
	for _, s := range []string{"entrowatch", "migrate"} { // built locally: neither may need a pull
		df := filepath.Join("compose", str(svcs[s], "build", "context"), str(svcs[s], "build", "dockerfile"))
		_, err = os.Stat(df)
		require.NoError(t, err, "compose %s: the build's Dockerfile", s)
	}

	// Bind mounts point at files of the repository.
	for name, s := range svcs {
		for _, v := range list(s, "volumes") {
			src := strings.SplitN(v.(string), ":", 2)[0]
			if !strings.HasPrefix(src, ".") || filepath.Base(src) == "estimator.json" { // named volume, or the user's artifact
				continue
			}
			_, err := os.Stat(filepath.Join("compose", src))
			require.NoError(t, err, "compose %s mounts %s", name, src)
		}
	}

	// The replicas' config: a real broker list and the ClickHouse sink, the
	// topic's partitions at least the replicas, metrics reachable.
	cfg := docs[filepath.Join("compose", "entrowatch.yaml")][0].v
	require.Equal(t, "clickhouse", str(cfg, "sink"))
	require.Equal(t, []any{"kafka:9092"}, list(cfg, "kafka", "brokers"))
	require.GreaterOrEqual(t, get(cfg, "partitions").(int), get(ew, "deploy", "replicas").(int))
	require.True(t, strings.HasPrefix(str(cfg, "metrics", "listen"), "0.0.0.0:"), "metrics must listen beyond localhost in a container")
	require.Contains(t, str(cfg, "clickhouse", "conn", "dsn"), "@clickhouse:9000/")
}

// objects returns the tables and views the migrations create.
func objects(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`CREATE (?:TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS \{db\}\.(\w+)`)
	files, err := filepath.Glob(filepath.Join("clickhouse", "*.sql"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	return out
}

type panelQuery struct {
	panel, kind, query string
}

func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	docs := load(t, "grafana")
	d := docs[filepath.Join("grafana", "entrowatch.json")][0].v
	require.NotEmpty(t, str(d, "uid"))
	require.NotEmpty(t, str(d, "title"))

	// Data sources the compose stack provisions.
	ds := load(t, "compose")[filepath.Join("compose", "grafana", "provisioning", "datasources", "datasources.yaml")][0].v
	uids := map[string]string{}
	for _, s := range list(ds, "datasources") {
		uids[str(s, "uid")] = str(s, "type")
	}
	var out []panelQuery
	ids := map[any]bool{}
	for _, p := range list(d, "panels") {
		title := str(p, "title")
		require.NotEmpty(t, title)
		require.False(t, ids[get(p, "id")], "panel id %v twice", get(p, "id"))
		ids[get(p, "id")] = true
		require.NotNil(t, get(p, "gridPos", "w"), "%s: gridPos", title)
		for _, tg := range list(p, "targets") {
			uid := str(tg, "datasource", "uid")
			typ, ok := uids[uid]
			require.True(t, ok, "%s: data source %q is not provisioned", title, uid)
			require.Equal(t, typ, str(tg, "datasource", "type"), "%s: data source type", title)
			switch typ {
			case "grafana-clickhouse-datasource":
				out = append(out, panelQuery{title, "sql", str(tg, "rawSql")})
			case "prometheus":
				out = append(out, panelQuery{title, "promql", str(tg, "expr")})
			}
		}
		require.NotEmpty(t, list(p, "targets"), "%s: no queries", title)
	}
	return out
}

func TestDashboardNamesExistingViewsAndMetrics(t *testing.T) {
	objs := objects(t)
	for _, want := range []string{"scored", "accuracy", "accuracy_rolling", "alarms", "labeling_queue", "calibration"} {
		require.True(t, objs[want], "migrations create no %s", want)
	}
	var metrics []byte
	for _, src := range []string{"streams/runner/metrics.go", "streams/httpin/httpin.go", "cmd/entrowatch/run.go", "cmd/entrowatch/alarms.go"} {
		b, err := os.ReadFile(filepath.Join("..", src))
		require.NoError(t, err)
		metrics = append(metrics, b...)
	}
	ref := regexp.MustCompile(`\bentrowatch\.(\w+)`)
	metric := regexp.MustCompile(`\bentrowatch_\w+`)
	histogram := regexp.MustCompile(`_(bucket|sum|count)$`)
	seen := map[string]bool{}
	for _, q := range dashboardQueries(t) {
		switch q.kind {
		case "sql":
			ms := ref.FindAllStringSubmatch(q.query, -1)
			require.NotEmpty(t, ms, "%s: the query names no entrowatch.<view>", q.panel)
			for _, m := range ms {
				require.True(t, objs[m[1]], "%s: entrowatch.%s is not created by deploy/clickhouse", q.panel, m[1])
				seen[m[1]] = true
			}
		case "promql":
			ms := metric.FindAllString(q.query, -1)
			if len(ms) == 0 { // the scrape itself, by the job of deploy/compose/prometheus.yml
				require.Contains(t, q.query, `up{job="entrowatch"}`, "%s: no entrowatch metric", q.panel)
			}
			for _, m := range ms {
				m = histogram.ReplaceAllString(m, "")
				require.Contains(t, string(metrics), `"`+m+`"`, "%s: metric %s is not exported by streams/runner, streams/httpin or run", q.panel, m)
			}
		}
	}
	for _, v := range []string{"accuracy", "alarms", "labeling_queue"} {
		require.True(t, seen[v], "the dashboard shows no %s", v)
	}
}

// expandMacros replaces the ClickHouse data source's macros the dashboard
// uses by what the plugin sends for "the last 30 days".
func expandMacros(q, db string) string {
	q = regexp.MustCompile(`\$__timeFilter\((\w+)\)`).ReplaceAllString(q, "$1 >= now() - 2592000 AND $1 <= now()")
	q = strings.ReplaceAll(q, "$__fromTime", "toDateTime(now() - 2592000)")
	q = strings.ReplaceAll(q, "$__toTime", "now()")
	return regexp.MustCompile(`\bentrowatch\.`).ReplaceAllString(q, db+".")
}

// TestDashboardQueriesRun runs every dashboard SQL query on a migrated
// clickhouse-server (Debian's 18.16 here).
func TestDashboardQueriesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clickhouse-server")
	}
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skipf("clickhouse-server is not installed (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() { // many small files: faster in memory
		if d, err := os.MkdirTemp("/dev/shm", "entrowatch-deploy-test-"); err == nil {
			dir = d
			defer os.RemoveAll(d)
		}
	}
	srv, err := clickhouse.StartLocal(ctx, clickhouse.LocalConfig{Dir: filepath.Join(dir, "clickhouse")}, nil)
	require.NoError(t, err)
	defer srv.Stop()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = srv.DSN()
	cfg.Database = "dashboard_check"
	_, err = clickhouse.Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	var ran []string
	for _, q := range dashboardQueries(t) {
		if q.kind != "sql" {
			continue
		}
		sql := expandMacros(q.query, cfg.Database)
		require.NotContains(t, sql, "$", "%s: unexpanded macro", q.panel)
		rows, err := conn.Query(ctx, sql)
		require.NoError(t, err, "%s:\n%s", q.panel, sql)
		cols := rows.Columns()
		for rows.Next() {
		}
		require.NoError(t, rows.Err(), q.panel)
		rows.Close()
		require.NotEmpty(t, cols, q.panel)
		ran = append(ran, q.panel)
	}
	sort.Strings(ran)
	require.GreaterOrEqual(t, len(ran), 6, "ran %v", ran)
}

// chdbTraffic is a day of scored traffic up to the last full hour: models
// m1 and m2 (an A/B test: same domains, same tenants, m2 a little worse),
// domains A and B, one response a minute each, a tenant attribute, every
// fifth labelled, every 50th an error. Domain A's accuracy drops in the last
// hour, so an alarm fires.
const chdbTraffic = `
INSERT INTO {db}.scored (trace_id, ts, model, domain, attributes_keys, attributes_values,
    correct, n_tokens, mean, q50, max, p_correct, cluster_id, status)
SELECT
    concat(m, '-trace-', toString(n)),
    toDateTime(toUInt32(toStartOfHour(now())) - 86400 + intDiv(n, 2) * 60, 'UTC'),
    m,
    if(n % 2 = 0, 'A', 'B'),
    ['tenant'],
    [concat('t', toString(n % 3))],
    if(n % 5 = 0, toNullable(toUInt8(n % 4 != 0)), NULL),
    100,
    1 + (n % 10) / 10,
    1 + (n % 8) / 10,
    3 + (n % 6) / 10,
    if(n % 2 = 0 AND n >= 2760, 0.4, 0.85) + (n % 7 - 3) / 100 - if(m = 'm2', 0.1, 0),
    0,
    if(n % 50 = 49, 'error', 'ok')
FROM (SELECT number % 2880 AS n, if(number >= 2880, 'm2', 'm1') AS m FROM numbers(5760))`

// TestDashboardQueriesRunOnChdb runs every dashboard SQL query on chDB
// (current ClickHouse as a library), migrated with the same files, over
// chdbTraffic: the dashboard must work on current servers, not only on 18.16.
func TestDashboardQueriesRunOnChdb(t *testing.T) {
	const db = "dashboard_check"
	ch := migratedChdb(t, db)
	_, err := ch.Exec(clickhouse.Expand(chdbTraffic, db))
	require.NoError(t, err)
	firing, err := ch.Exec("SELECT count() FROM " + db + ".alarms")
	require.NoError(t, err)
	require.NotEqual(t, "0\n", firing, "the traffic must fire an alarm")

	ran := 0
	for _, q := range dashboardQueries(t) {
		if q.kind != "sql" {
			continue
		}
		ran++
		t.Run(q.panel, func(t *testing.T) {
			sql := expandMacros(q.query, db)
			require.NotContains(t, sql, "$", "unexpanded macro")
			out, err := ch.Exec(sql)
			require.NoError(t, err, "chDB:\n%s", sql)
			require.NotEmpty(t, out, "no rows from the test traffic:\n%s", sql)
			// A time series (first column time) names each point by the
			// columns before its value: two rows with the same names at
			// one time are two models' (or slices') values under one
			// series, which Grafana draws as one.
			if strings.Contains(sql, " AS time,") {
				seen := map[string]bool{}
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					f := strings.Split(line, "\t")
					key := strings.Join(f[:len(f)-1], "\t")
					require.False(t, seen[key], "two points named %q: put what tells them apart (the model?) in the series name:\n%s", key, sql)
					seen[key] = true
				}
			}
		})
	}
	require.GreaterOrEqual(t, ran, 6)
}

// TestDockerignore: the image's build context (the repository root) leaves
// out the build cache, git history, binaries and local data (the development
// tree's .cache alone was 534 MB), and keeps what the build needs.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../.dockerignore")
	require.NoError(t, err, "the repository root needs a .dockerignore")
	var pats []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	ignored := func(p string) bool {
		for _, pat := range pats {
			if ok, _ := filepath.Match(pat, p); ok || strings.HasPrefix(p, pat+"/") {
				return true
			}
		}
		return false
	}
	for _, p := range []string{".git/HEAD", ".cache/go-build/x", "bin/entrowatch", "entrowatch", "profile.test", ".entrowatch/broker/x"} {
		require.True(t, ignored(p), "%s should not be sent to the build", p)
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/entrowatch/main.go", "deploy/clickhouse/001_tables.sql", "operators/profile/profile.go"} {
		require.False(t, ignored(p), "%s is needed by the build", p)
	}
}

// TestAlertRules: every rule of deploy/prometheus/alerts.yml is complete and
// names only metrics the replicas export (with the labels it groups by).
func TestAlertRules(t *testing.T) {
	docs := load(t, "prometheus")
	rules := docs[filepath.Join("prometheus", "alerts.yml")]
	require.Len(t, rules, 1)
	var metrics []byte
	for _, src := range []string{"streams/runner/metrics.go", "streams/httpin/httpin.go", "cmd/entrowatch/run.go", "cmd/entrowatch/alarms.go"} {
		b, err := os.ReadFile(filepath.Join("..", src))
		require.NoError(t, err)
		metrics = append(metrics, b...)
	}
	metric := regexp.MustCompile(`\bentrowatch_\w+`)
	// The rules on the scrape itself select the job the compose stack's
	// Prometheus scrapes the replicas as.
	scrape := load(t, "compose")[filepath.Join("compose", "prometheus.yml")][0].v
	jobs := list(scrape, "scrape_configs")
	require.Len(t, jobs, 2, "the replicas and the alarm dispatcher")
	require.Equal(t, "entrowatch-alarms", str(jobs[1], "job_name"))
	up := `up{job="` + str(jobs[0], "job_name") + `"}`
	upAlarms := `up{job="` + str(jobs[1], "job_name") + `"}`
	n, ups, upsAlarms := 0, 0, 0
	for _, g := range list(rules[0].v, "groups") {
		for _, r := range list(g, "rules") {
			name := str(r, "alert")
			require.NotEmpty(t, name)
			expr := str(r, "expr")
			require.NotEmpty(t, str(r, "for"), name)
			require.Contains(t, []string{"warning", "critical"}, str(r, "labels", "severity"), name)
			require.NotEmpty(t, str(r, "annotations", "summary"), name)
			require.NotEmpty(t, str(r, "annotations", "description"), name)
			ms := metric.FindAllString(expr, -1)
			if len(ms) == 0 && strings.Contains(expr, "up{") {
				if strings.Contains(expr, upAlarms) {
					upsAlarms++
				} else {
					require.Contains(t, expr, up, "%s: a scrape job of deploy/compose/prometheus.yml", name)
					ups++
				}
			}
			require.True(t, len(ms) > 0 || strings.Contains(expr, up) || strings.Contains(expr, upAlarms), "%s: names no entrowatch metric and no %s", name, up)
			for _, m := range ms {
				require.Contains(t, string(metrics), `"`+m+`"`, "%s: metric %s is not exported", name, m)
				if strings.HasPrefix(m, "entrowatch_stream_") && strings.Contains(expr, "by (topic") {
					require.Contains(t, string(metrics), `prometheus.Labels{"topic": topic}`, "%s groups by topic", name)
				}
			}
			require.Equal(t, strings.Count(expr, "("), strings.Count(expr, ")"), "%s: unbalanced parentheses", name)
			n++
		}
	}
	require.GreaterOrEqual(t, n, 5)
	require.Positive(t, ups, "a rule must notice replicas that are down or missing (%s): the others are computed from their own series", up)
	require.Positive(t, upsAlarms, "a rule must notice an alarm dispatcher that is down or missing (%s): EntrowatchAlarmsStale needs its series", upAlarms)
}

// migratedChdb opens chDB (skipping the test without the library) with
// database db created and every migration applied, as entrowatch migrate
// does on a server.
func migratedChdb(t *testing.T, db string) *chdb.DB {
	t.Helper()
	ch, err := chdb.Open(t.TempDir())
	if errors.Is(err, chdb.ErrNoLibrary) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(ch.Close)
	_, err = ch.Exec("CREATE DATABASE " + db)
	require.NoError(t, err)
	ms, err := clickhouse.Migrations()
	require.NoError(t, err)
	for _, m := range ms {
		for i, s := range m.Statements {
			_, err := ch.Exec(clickhouse.Expand(s, db))
			require.NoError(t, err, "chDB: %s statement %d:\n%s", m.Name, i+1, s)
		}
	}
	return ch
}
