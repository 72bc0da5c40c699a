#!/usr/bin/env python3
"""Offline checks for rendered campusbite-notify manifests.

kubernetes-validate checks built-in kinds against the Kubernetes OpenAPI
schemas, but only warns for custom resources. This script reads a rendered
multi-document YAML stream on stdin (kustomize or helm output) and checks:

* the required fields of the custom resources we ship: ServiceMonitor,
  PrometheusRule (every rule has alert, expr, for, labels.severity),
  HTTPRoute (parentRefs, rules[].backendRefs) and KEDA ScaledObject;
* that cross-references resolve inside the stream (Service selectors and
  ports, backendRefs, scale targets, ConfigMap/Secret references);
* the deployment invariants that matter for long-lived SSE streams and for
  a safe pod (probes, preStop sleep, grace period longer than
  NOTIFY_SHUTDOWN_GRACE + preStop, non-root, read-only root filesystem, all
  capabilities dropped, no request timeout / no buffering at the edge);
* the bundled NATS StatefulSet (replicas, routes, JetStream store below the
  volume size) and its access control: nats.conf includes auth.conf, which
  has an authorization block and no no_auth_user, the passwords come from a
  Secret, the gateway authenticates (NOTIFY_NATS_USER + NOTIFY_NATS_PASSWORD
  from a Secret, or NOTIFY_NATS_CREDS_FILE), TLS is mounted where nats.conf
  reads it and the gateway of a tls:// URL has NOTIFY_NATS_TLS_CA_FILE;
* every alert has a runbook_url whose anchor is a heading of the runbook
  (--runbook FILE); cert-manager Certificates have secretName, issuerRef
  and names;
* duplicate mapping keys anywhere (YAML parsers silently keep the last one).

Usage: check_crds.py --name LABEL [--expect KIND ...] [--expect-env K=V ...]
                     [--nats-replicas N] [--dump-nats-conf DIR] [--runbook FILE]
                     [--in FILE] < rendered.yaml
Standard library + PyYAML only. Exit status 1 on any failure.
"""

import argparse
import json
import os
import re
import sys

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
ALERT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SEVERITIES = {"critical", "warning", "info"}
# Alerts issue 4 asks for, matched by name.
REQUIRED_ALERTS = {
    "no ready nodes": re.compile(r"NoReady", re.I),
    "NATS disconnected": re.compile(r"Nats.*Disconnected", re.I),
    "deliveries dropping": re.compile(r"Drop", re.I),
    "p99 delivery latency high": re.compile(r"Latency", re.I),
    "connection limit near": re.compile(r"ConnectionLimit", re.I),
}
GATEWAY_CONTAINER = "campusbite-notify"
GATEWAY_PORT = 8080


class Checker:
    def __init__(self, name):
        self.name = name
        self.errors = []
        self.passed = 0

    def ok(self, cond, msg):
        if cond:
            self.passed += 1
        else:
            self.errors.append(msg)
        return cond


def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def parse_duration(text):
    """Seconds in a humantime-style duration such as 20s, 1m30s, 500ms."""
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    pos = 0
    text = text.replace(" ", "")
    for m in re.finditer(r"([0-9]+)(ms|s|m|h|d)", text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and text else None


def parse_size(text):
    """Bytes in a Kubernetes quantity or a NATS size (K/M/G/T taken as 1024-based)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]i?B?|[kmgtp]?)", str(text).strip())
    if not m:
        return None
    num, unit = float(m.group(1)), m.group(2).upper().rstrip("B")
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
    base = unit.rstrip("I")
    if base not in power:
        return None
    return num * (1024 ** power[base])


def balanced(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    in_str = None
    for ch in expr:
        if in_str:
            if ch == in_str:
                in_str = None
            continue
        if ch in "\"'`":
            in_str = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and in_str is None


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="stdin", help="label for messages")
    ap.add_argument("--in", dest="infile", metavar="FILE", help="read FILE instead of stdin")
    ap.add_argument("--expect", action="append", default=[], metavar="KIND",
                    help="a kind that must be present (repeatable)")
    ap.add_argument("--expect-env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting the gateway's ConfigMap must hold (repeatable)")
    ap.add_argument("--nats-replicas", type=int, help="expected replicas of the NATS StatefulSet")
    ap.add_argument("--dump-nats-conf", metavar="DIR",
                    help="write every NATS ConfigMap found to DIR/<name>/ (for `nats-server -t`)")
    ap.add_argument("--runbook", metavar="FILE",
                    help="Markdown runbook whose headings every alert's runbook_url anchor must name")
    args = ap.parse_args()
    c = Checker(args.name)
    anchors = None
    if args.runbook:
        with open(args.runbook, encoding="utf-8") as f:
            anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*$", f.read(), re.M)}

    try:
        if args.infile:
            with open(args.infile, encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        docs = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as e:
        print(f"check_crds: {args.name}: YAML error: {e}", file=sys.stderr)
        return 1
    c.ok(len(docs) > 0, "no documents on stdin")

    by_kind = {}
    for d in docs:
        ok = c.ok(isinstance(d, dict) and d.get("apiVersion") and d.get("kind")
                  and get(d, "metadata", "name"), f"document without apiVersion/kind/metadata.name: {str(d)[:120]}")
        if ok:
            by_kind.setdefault(d["kind"], []).append(d)

    def named(kind, name):
        return next((d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name), None)

    def ident(d):
        return f"{d['kind']}/{d['metadata']['name']}"

    for kind in args.expect:
        c.ok(kind in by_kind, f"expected a {kind}, found none")

    services = by_kind.get("Service", [])
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])

    # ---- Services select pods that exist.
    for svc in services:
        sel = get(svc, "spec", "selector", default={})
        c.ok(any(labels_match(sel, get(w, "spec", "template", "metadata", "labels", default={}))
                 for w in workloads), f"{ident(svc)}: selector {sel} matches no pod template")

    # ---- Gateway Deployment.
    gw_cm = {}
    gateways = [d for d in by_kind.get("Deployment", [])
                if any(ct.get("name") == GATEWAY_CONTAINER
                       for ct in get(d, "spec", "template", "spec", "containers", default=[]))]
    c.ok(len(gateways) == 1, f"expected exactly one gateway Deployment, found {len(gateways)}")
    for dep in gateways:
        who = ident(dep)
        pod = get(dep, "spec", "template", "spec", default={})
        ct = next(x for x in pod["containers"] if x.get("name") == GATEWAY_CONTAINER)
        psc, csc = pod.get("securityContext", {}), ct.get("securityContext", {})
        c.ok(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, f"{who}: runAsNonRoot")
        c.ok(csc.get("readOnlyRootFilesystem") is True, f"{who}: readOnlyRootFilesystem")
        c.ok(csc.get("allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation false")
        c.ok(get(csc, "capabilities", "drop") == ["ALL"], f"{who}: capabilities drop ALL")
        c.ok(get(psc, "seccompProfile", "type") == "RuntimeDefault"
             or get(csc, "seccompProfile", "type") == "RuntimeDefault", f"{who}: seccompProfile RuntimeDefault")
        c.ok(pod.get("automountServiceAccountToken") is False, f"{who}: automountServiceAccountToken false")
        c.ok(any(p.get("name") == "http" and p.get("containerPort") == GATEWAY_PORT
                 for p in ct.get("ports", [])), f"{who}: container port {GATEWAY_PORT} named http")
        c.ok(get(ct, "livenessProbe", "httpGet", "path") == "/healthz", f"{who}: liveness probe on /healthz")
        c.ok(get(ct, "readinessProbe", "httpGet", "path") == "/readyz", f"{who}: readiness probe on /readyz")
        c.ok(get(ct, "livenessProbe", "httpGet", "port") in ("http", GATEWAY_PORT), f"{who}: liveness port http")
        c.ok(get(ct, "readinessProbe", "httpGet", "port") in ("http", GATEWAY_PORT), f"{who}: readiness port http")
        c.ok(get(ct, "resources", "requests", "cpu") and get(ct, "resources", "requests", "memory")
             and get(ct, "resources", "limits", "memory"), f"{who}: cpu/memory requests and memory limit")
        c.ok(len(pod.get("topologySpreadConstraints", [])) > 0, f"{who}: topologySpreadConstraints")
        pre_stop = get(ct, "lifecycle", "preStop", "sleep", "seconds")
        c.ok(isinstance(pre_stop, int) and pre_stop > 0, f"{who}: lifecycle.preStop.sleep.seconds")
        # Environment: ConfigMap via envFrom, JWT secret from a Secret.
        env = {}
        for ef in ct.get("envFrom", []):
            cm_name = get(ef, "configMapRef", "name")
            if cm_name:
                cm = named("ConfigMap", cm_name)
                if c.ok(cm is not None, f"{who}: envFrom ConfigMap {cm_name} is not in the rendered output"):
                    env.update(cm.get("data", {}))
        gw_cm = env
        for e in ct.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        jwt = next((e for e in ct.get("env", []) if e.get("name") == "NOTIFY_JWT_SECRET"), None)
        uses_key = "NOTIFY_JWT_PUBLIC_KEY_FILE" in env
        if jwt is not None or not uses_key:
            c.ok(jwt is not None and get(jwt, "valueFrom", "secretKeyRef", "name")
                 and get(jwt, "valueFrom", "secretKeyRef", "key"),
                 f"{who}: NOTIFY_JWT_SECRET must come from a Secret (secretKeyRef)")
        c.ok(all(k.startswith("NOTIFY_") or k == "RUST_LOG" for k in env),
             f"{who}: unexpected settings {[k for k in env if not k.startswith('NOTIFY_') and k != 'RUST_LOG']}")
        c.ok(env.get("NOTIFY_LISTEN", "").endswith(f":{GATEWAY_PORT}"), f"{who}: NOTIFY_LISTEN on :{GATEWAY_PORT}")
        c.ok(bool(env.get("NOTIFY_NATS_URL")), f"{who}: NOTIFY_NATS_URL set")
        grace = parse_duration(env.get("NOTIFY_SHUTDOWN_GRACE", "20s"))
        tgps = pod.get("terminationGracePeriodSeconds")
        if c.ok(grace is not None, f"{who}: NOTIFY_SHUTDOWN_GRACE is not a duration"):
            c.ok(isinstance(tgps, int) and isinstance(pre_stop, int) and tgps > grace + pre_stop,
                 f"{who}: terminationGracePeriodSeconds ({tgps}) must exceed "
                 f"NOTIFY_SHUTDOWN_GRACE ({grace:g}s) + preStop sleep ({pre_stop}s)")
        for kv in args.expect_env:
            k, _, v = kv.partition("=")
            c.ok(env.get(k) == v, f"{who}: expected {k}={v}, found {env.get(k)!r}")
        # NATS credentials and TLS of the gateway.
        genv = {e.get("name"): e for e in ct.get("env", [])}
        if env.get("NOTIFY_NATS_URL"):
            creds = "NOTIFY_NATS_CREDS_FILE" in env
            pw = get(genv.get("NOTIFY_NATS_PASSWORD"), "valueFrom", "secretKeyRef", "name")
            user = env.get("NOTIFY_NATS_USER") or get(genv.get("NOTIFY_NATS_USER"), "value")
            c.ok(creds or (bool(pw) and bool(user)),
                 f"{who}: the gateway must authenticate to NATS (NOTIFY_NATS_USER + NOTIFY_NATS_PASSWORD from a Secret, or NOTIFY_NATS_CREDS_FILE)")
            if env["NOTIFY_NATS_URL"].startswith("tls://"):
                ca = env.get("NOTIFY_NATS_TLS_CA_FILE", "")
                mounted = [m.get("mountPath") for m in ct.get("volumeMounts", [])]
                c.ok(bool(ca) and any(ca.startswith(m.rstrip("/") + "/") for m in mounted if m),
                     f"{who}: a tls:// NATS URL needs NOTIFY_NATS_TLS_CA_FILE on a mounted volume")
        # The gateway's Service.
        gw_svcs = [s for s in services
                   if labels_match(get(s, "spec", "selector", default={}),
                                   get(dep, "spec", "template", "metadata", "labels", default={}))]
        c.ok(len(gw_svcs) == 1 and any(p.get("name") == "http" for p in get(gw_svcs[0], "spec", "ports", default=[])),
             f"{who}: exactly one Service with a port named http selects the gateway")

    # ---- ServiceMonitor.
    for sm in by_kind.get("ServiceMonitor", []):
        who = ident(sm)
        c.ok(sm["apiVersion"] == "monitoring.coreos.com/v1", f"{who}: apiVersion monitoring.coreos.com/v1")
        sel = get(sm, "spec", "selector", "matchLabels", default={})
        targets = [s for s in services if labels_match(sel, get(s, "metadata", "labels", default={}))]
        c.ok(len(targets) > 0, f"{who}: spec.selector.matchLabels {sel} selects no Service")
        eps = get(sm, "spec", "endpoints", default=[])
        c.ok(isinstance(eps, list) and len(eps) > 0, f"{who}: spec.endpoints must be a non-empty list")
        for ep in eps or []:
            port_names = {p.get("name") for s in targets for p in get(s, "spec", "ports", default=[])}
            c.ok(ep.get("port") in port_names, f"{who}: endpoint port {ep.get('port')!r} is not a port name of the Service")
            c.ok(ep.get("path", "/metrics") == "/metrics", f"{who}: endpoint path /metrics")
            for f in ("interval", "scrapeTimeout"):
                if f in ep:
                    c.ok(bool(DURATION_RE.match(str(ep[f]))), f"{who}: {f} {ep[f]!r} is not a duration")

    # ---- PrometheusRule.
    alerts = []
    for pr in by_kind.get("PrometheusRule", []):
        who = ident(pr)
        c.ok(pr["apiVersion"] == "monitoring.coreos.com/v1", f"{who}: apiVersion monitoring.coreos.com/v1")
        groups = get(pr, "spec", "groups", default=[])
        c.ok(isinstance(groups, list) and len(groups) > 0, f"{who}: spec.groups must be a non-empty list")
        gnames = [g.get("name") for g in groups]
        c.ok(len(gnames) == len(set(gnames)), f"{who}: duplicate group names")
        for g in groups:
            c.ok(isinstance(g.get("name"), str) and g["name"], f"{who}: group without name")
            rules = g.get("rules", [])
            c.ok(isinstance(rules, list) and len(rules) > 0, f"{who}: group {g.get('name')} has no rules")
            for r in rules:
                rid = f"{who}: rule {r.get('alert') or r.get('record')}"
                c.ok(set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"},
                     f"{rid}: unknown fields {set(r) - {'alert', 'record', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations'}}")
                expr = r.get("expr")
                c.ok(isinstance(expr, str) and expr.strip(), f"{rid}: expr missing")
                if isinstance(expr, str):
                    c.ok(balanced(expr), f"{rid}: unbalanced brackets in expr")
                    c.ok("{{" not in expr and "}}" not in expr, f"{rid}: template markers left in expr")
                    c.ok("notify_" in expr or "jetstream_" in expr,
                         f"{rid}: expr uses no notify_* or jetstream_* metric")
                if "record" in r:
                    continue
                c.ok(isinstance(r.get("alert"), str) and ALERT_NAME_RE.match(r["alert"]), f"{rid}: alert name")
                c.ok(isinstance(r.get("for"), str) and DURATION_RE.match(r["for"]), f"{rid}: 'for' must be a duration")
                c.ok(get(r, "labels", "severity") in SEVERITIES, f"{rid}: labels.severity must be one of {sorted(SEVERITIES)}")
                c.ok(bool(get(r, "annotations", "summary")), f"{rid}: annotations.summary")
                url = get(r, "annotations", "runbook_url", default="")
                if c.ok(isinstance(url, str) and re.match(r"^https?://[^#\s]+#[-\w]+$", url),
                        f"{rid}: annotations.runbook_url must be a URL with an #anchor, found {url!r}"):
                    anchor = url.rsplit("#", 1)[1]
                    c.ok(anchor == r.get("alert", "").lower(), f"{rid}: runbook anchor {anchor!r} is not the alert's name")
                    if anchors is not None:
                        c.ok(anchor in anchors, f"{rid}: runbook anchor #{anchor} is not a heading of {args.runbook}")
                alerts.append(r.get("alert", ""))
    if by_kind.get("PrometheusRule"):
        for what, rx in REQUIRED_ALERTS.items():
            c.ok(any(rx.search(a) for a in alerts), f"PrometheusRule: no alert for {what}")
        c.ok(len(alerts) == len(set(alerts)), "PrometheusRule: duplicate alert names")

    # ---- HTTPRoute.
    for hr in by_kind.get("HTTPRoute", []):
        who = ident(hr)
        c.ok(hr["apiVersion"] == "gateway.networking.k8s.io/v1", f"{who}: apiVersion gateway.networking.k8s.io/v1")
        prefs = get(hr, "spec", "parentRefs", default=[])
        c.ok(isinstance(prefs, list) and len(prefs) > 0, f"{who}: spec.parentRefs must be a non-empty list")
        for p in prefs or []:
            c.ok(bool(p.get("name")), f"{who}: parentRef without name")
        rules = get(hr, "spec", "rules", default=[])
        c.ok(isinstance(rules, list) and len(rules) > 0, f"{who}: spec.rules must be a non-empty list")
        for r in rules or []:
            brefs = r.get("backendRefs", [])
            c.ok(isinstance(brefs, list) and len(brefs) > 0, f"{who}: rule without backendRefs")
            for b in brefs or []:
                svc = named("Service", b.get("name")) if b.get("kind", "Service") == "Service" else None
                c.ok(svc is not None, f"{who}: backendRef {b.get('name')} is not a rendered Service")
                c.ok(svc is not None and b.get("port") in [p.get("port") for p in get(svc, "spec", "ports", default=[])],
                     f"{who}: backendRef port {b.get('port')} is not a port of Service {b.get('name')}")
            # SSE: the request timeout must be disabled ("0s").
            c.ok(get(r, "timeouts", "request") in ("0s", "0"), f"{who}: timeouts.request must be \"0s\" for SSE")
            for m in r.get("matches", []):
                c.ok(get(m, "path", "type") in ("PathPrefix", "Exact", "RegularExpression"), f"{who}: match path type")

    # ---- Ingress (ingress-nginx, SSE).
    for ing in by_kind.get("Ingress", []):
        who = ident(ing)
        ann = get(ing, "metadata", "annotations", default={})
        c.ok(ann.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off", f"{who}: proxy-buffering off")
        for a in ("proxy-read-timeout", "proxy-send-timeout"):
            v = ann.get(f"nginx.ingress.kubernetes.io/{a}", "60")
            c.ok(v.isdigit() and int(v) >= 3600, f"{who}: {a} must be >= 3600 (found {v})")
        for rule in get(ing, "spec", "rules", default=[]):
            for p in get(rule, "http", "paths", default=[]):
                name = get(p, "backend", "service", "name")
                c.ok(named("Service", name) is not None, f"{who}: backend Service {name} is not rendered")

    # ---- Scalers.
    hpa_targets = [get(h, "spec", "scaleTargetRef", "name") for h in by_kind.get("HorizontalPodAutoscaler", [])]
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        who = ident(h)
        c.ok(named("Deployment", get(h, "spec", "scaleTargetRef", "name")) is not None, f"{who}: scaleTargetRef not rendered")
        c.ok(get(h, "spec", "minReplicas", default=1) <= get(h, "spec", "maxReplicas", default=0), f"{who}: min > max")
    for so in by_kind.get("ScaledObject", []):
        who = ident(so)
        c.ok(so["apiVersion"] == "keda.sh/v1alpha1", f"{who}: apiVersion keda.sh/v1alpha1")
        target = get(so, "spec", "scaleTargetRef", "name")
        c.ok(bool(target) and named("Deployment", target) is not None, f"{who}: spec.scaleTargetRef.name {target!r} not rendered")
        c.ok(target not in hpa_targets, f"{who}: an HPA also scales {target} (KEDA owns its own HPA)")
        lo, hi = get(so, "spec", "minReplicaCount", default=0), get(so, "spec", "maxReplicaCount", default=100)
        c.ok(isinstance(lo, int) and isinstance(hi, int) and lo <= hi, f"{who}: minReplicaCount > maxReplicaCount")
        trig = get(so, "spec", "triggers", default=[])
        c.ok(isinstance(trig, list) and len(trig) > 0, f"{who}: spec.triggers must be a non-empty list")
        for t in trig or []:
            c.ok(bool(t.get("type")) and isinstance(t.get("metadata"), dict), f"{who}: trigger needs type and metadata")
            md = t.get("metadata", {}) or {}
            c.ok(all(isinstance(v, str) for v in md.values()), f"{who}: trigger metadata values must be strings")
            if t.get("type") == "prometheus":
                for f in ("serverAddress", "query", "threshold"):
                    c.ok(bool(md.get(f)), f"{who}: prometheus trigger needs metadata.{f}")
                c.ok("notify_connections_open" in md.get("query", ""), f"{who}: query on notify_connections_open")
                c.ok(balanced(md.get("query", "")), f"{who}: unbalanced brackets in query")

    # ---- NetworkPolicy.
    for np in by_kind.get("NetworkPolicy", []):
        who = ident(np)
        c.ok(set(get(np, "spec", "policyTypes", default=[])) == {"Ingress", "Egress"}, f"{who}: policyTypes Ingress and Egress")
        ports = {p.get("port") for e in get(np, "spec", "egress", default=[]) for p in e.get("ports", [])}
        for_nats = get(np, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name") == "nats"
        if for_nats:
            # NATS servers: routes out, clients only from named peers.
            c.ok(ports == {53, 6222}, f"{who}: NATS egress only to DNS (53) and routes (6222), found {sorted(map(str, ports))}")
            client_rules = [i for i in get(np, "spec", "ingress", default=[])
                            if any(p.get("port") == 4222 for p in i.get("ports", []))]
            c.ok(len(client_rules) >= 1 and all(
                all(peer.get("podSelector", {}).get("matchLabels") for peer in i.get("from", []))
                for i in client_rules), f"{who}: every client (4222) source must select pods by label")
        else:
            c.ok(53 in ports and len(ports) == 2 and all(isinstance(p, int) for p in ports),
                 f"{who}: egress only to DNS (53) and the NATS client port, found {sorted(map(str, ports))}")
        c.ok(all(e.get("ports") for e in get(np, "spec", "egress", default=[])), f"{who}: every egress rule names its ports")
        c.ok(all(i.get("from") for i in get(np, "spec", "ingress", default=[])), f"{who}: every ingress rule names its sources")

    # ---- cert-manager Certificates.
    for cert in by_kind.get("Certificate", []):
        who = ident(cert)
        c.ok(cert["apiVersion"] == "cert-manager.io/v1", f"{who}: apiVersion cert-manager.io/v1")
        spec = cert.get("spec", {})
        c.ok(bool(spec.get("secretName")), f"{who}: spec.secretName")
        c.ok(bool(get(spec, "issuerRef", "name")), f"{who}: spec.issuerRef.name")
        c.ok(bool(spec.get("dnsNames") or spec.get("commonName")), f"{who}: dnsNames or commonName")
        c.ok(set(spec) <= {"secretName", "issuerRef", "dnsNames", "commonName", "duration", "renewBefore",
                           "privateKey", "usages", "isCA", "subject", "ipAddresses", "uris", "secretTemplate"},
             f"{who}: unknown spec fields {set(spec) - {'secretName', 'issuerRef', 'dnsNames', 'commonName'}}")
        for f in ("duration", "renewBefore"):
            if f in spec:
                c.ok(bool(re.fullmatch(r"([0-9]+(h|m|s))+", str(spec[f]))), f"{who}: {f} {spec[f]!r}")

    # ---- PodDisruptionBudgets select something.
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = get(pdb, "spec", "selector", "matchLabels", default={})
        c.ok(any(labels_match(sel, get(w, "spec", "template", "metadata", "labels", default={})) for w in workloads),
             f"{ident(pdb)}: selector matches no workload")

    # ---- Bundled NATS.
    nats_sets = [s for s in by_kind.get("StatefulSet", [])
                 if any(ct.get("name") == "nats" for ct in get(s, "spec", "template", "spec", "containers", default=[]))]
    if args.nats_replicas is not None:
        c.ok(len(nats_sets) == 1, f"expected one NATS StatefulSet, found {len(nats_sets)}")
    for ss in nats_sets:
        who = ident(ss)
        replicas = get(ss, "spec", "replicas", default=1)
        if args.nats_replicas is not None:
            c.ok(replicas == args.nats_replicas, f"{who}: replicas {replicas}, expected {args.nats_replicas}")
        headless = named("Service", get(ss, "spec", "serviceName"))
        c.ok(headless is not None and get(headless, "spec", "clusterIP") == "None",
             f"{who}: serviceName must be a rendered headless Service")
        c.ok(headless is not None and get(headless, "spec", "publishNotReadyAddresses") is True,
             f"{who}: headless Service needs publishNotReadyAddresses for cluster routes")
        vcts = get(ss, "spec", "volumeClaimTemplates", default=[])
        c.ok(len(vcts) == 1, f"{who}: one volumeClaimTemplate for the JetStream store")
        pvc_size = parse_size(get(vcts, 0, "spec", "resources", "requests", "storage", default=""))
        pod = get(ss, "spec", "template", "spec", default={})
        csc = get(pod, "containers", 0, "securityContext", default={})
        c.ok(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
             and get(csc, "capabilities", "drop") == ["ALL"], f"{who}: restricted container securityContext")
        c.ok(get(pod, "securityContext", "runAsNonRoot") is True, f"{who}: runAsNonRoot")
        cm_name = next((get(v, "configMap", "name") for v in pod.get("volumes", []) if get(v, "configMap", "name")), None)
        cm = named("ConfigMap", cm_name) if cm_name else None
        conf = get(cm, "data", "nats.conf") if cm else None
        if c.ok(isinstance(conf, str), f"{who}: ConfigMap {cm_name} with nats.conf not rendered"):
            c.ok("jetstream" in conf and "store_dir" in conf, f"{who}: nats.conf enables JetStream with a store_dir")
            routes = re.findall(r"nats://[^\s\"]+:6222", conf)
            if replicas > 1:
                c.ok("cluster" in conf and len(routes) == replicas,
                     f"{who}: {replicas} replicas need a cluster block with {replicas} routes, found {len(routes)}")
                for i in range(replicas):
                    c.ok(any(r.startswith(f"nats://{ss['metadata']['name']}-{i}.") for r in routes),
                         f"{who}: no route to {ss['metadata']['name']}-{i}")
            m = re.search(r"max_file_store:\s*\"?([0-9A-Za-z.]+)", conf)
            fs = parse_size(m.group(1)) if m else None
            c.ok(fs is not None and pvc_size is not None and fs < pvc_size,
                 f"{who}: JetStream max_file_store must be set below the volume size")
            # Access control.
            auth = get(cm, "data", "auth.conf")
            c.ok(re.search(r'^include\s+"?auth\.conf"?\s*$', conf, re.M) is not None,
                 f"{who}: nats.conf must include auth.conf")
            if c.ok(isinstance(auth, str), f"{who}: ConfigMap {cm_name} has no auth.conf"):
                c.ok("authorization {" in auth and "permissions" in auth, f"{who}: auth.conf has no authorization with permissions")
                c.ok(not re.search(r"^\s*no_auth_user\b", auth + "\n" + conf, re.M), f"{who}: no_auth_user must not be set")
                c.ok("password: $NATS_GATEWAY_PASSWORD" in auth and "password: $NATS_PRODUCER_PASSWORD" in auth,
                     f"{who}: auth.conf must take the passwords from the environment")
            nats_ct = next((x for x in pod.get("containers", []) if x.get("name") == "nats"), {})
            nenv = {e.get("name"): e for e in nats_ct.get("env", [])}
            for var in ("NATS_GATEWAY_PASSWORD_RAW", "NATS_PRODUCER_PASSWORD_RAW"):
                c.ok(bool(get(nenv.get(var), "valueFrom", "secretKeyRef", "name")), f"{who}: {var} must come from a Secret")
            for var in ("NATS_GATEWAY_USER", "NATS_PRODUCER_USER", "NATS_GATEWAY_PASSWORD", "NATS_PRODUCER_PASSWORD"):
                v = get(nenv.get(var), "value", default="")
                c.ok(isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"', f"{who}: {var} must be a quoted NATS string")
            # TLS: mounted where nats.conf reads it.
            if re.search(r"^\s*tls\s*\{", conf, re.M):
                mounts = {m.get("mountPath"): m.get("name") for m in nats_ct.get("volumeMounts", [])}
                vol = next((v for v in pod.get("volumes", []) if v.get("name") == mounts.get("/etc/nats/tls")), None)
                c.ok(bool(get(vol, "secret", "secretName")), f"{who}: nats.conf uses TLS but no Secret is mounted at /etc/nats/tls")
                if replicas > 1:
                    c.ok(conf.count("verify: true") >= 1, f"{who}: routes must verify each other (verify: true)")
            if args.dump_nats_conf:
                out = os.path.join(args.dump_nats_conf, args.name)
                os.makedirs(out, exist_ok=True)
                for key, val in (cm.get("data") or {}).items():
                    with open(os.path.join(out, key), "w") as f:
                        f.write(val)
        stream_replicas = gw_cm.get("NOTIFY_STREAM_REPLICAS")
        if stream_replicas is not None:
            c.ok(stream_replicas.isdigit() and 1 <= int(stream_replicas) <= replicas,
                 f"{who}: NOTIFY_STREAM_REPLICAS={stream_replicas} needs at least that many NATS servers ({replicas})")

    # ---- Grafana dashboard ConfigMap.
    for cm in by_kind.get("ConfigMap", []):
        if get(cm, "metadata", "labels", "grafana_dashboard") is not None:
            who = ident(cm)
            c.ok(get(cm, "metadata", "labels", "grafana_dashboard") == "1", f"{who}: label grafana_dashboard: \"1\"")
            for key, val in (cm.get("data") or {}).items():
                try:
                    dash = json.loads(val)
                    c.ok(len(dash.get("panels", [])) >= 6, f"{who}: {key} has fewer than 6 panels")
                    exprs = " ".join(t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", []))
                    c.ok("histogram_quantile" in exprs and "notify_delivery_latency_seconds_bucket" in exprs,
                         f"{who}: {key} has no latency percentile panel")
                except ValueError as e:
                    c.ok(False, f"{who}: {key} is not JSON: {e}")

    for e in c.errors:
        print(f"check_crds: {args.name}: FAIL {e}", file=sys.stderr)
    kinds = ", ".join(f"{k}x{len(v)}" for k, v in sorted(by_kind.items()))
    print(f"check_crds: {args.name}: {len(docs)} documents ({kinds}); {c.passed} checks passed, {len(c.errors)} failed")
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
