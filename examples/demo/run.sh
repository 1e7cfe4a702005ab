#!/usr/bin/env bash
# The main job end to end on the local sandbox, as users know it from upstream's getting
# started: `karpctl init`, a NodePool restricted to a few instance types, a pause Deployment
# requesting 1Gi per replica scaled 0 -> 5 -> 12, a NodeClaim deleted and drained, then scaled
# 12 -> 5 -> 1 while consolidation shrinks the pool, with every pod Running and what each
# node costs. Run from the repository root (`make demo` does).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/karpctl-target}"
bin="$CARGO_TARGET_DIR/debug"

step() { printf '\n== %s\n' "$*"; }
kubectl() { sandbox/sandbox kubectl "$@"; }

# Waits until `want` inflate pods are Running (each on a Node the controller launched).
wait_running() {
  local want=$1 deadline=$((SECONDS + 180)) running
  while :; do
    running=$(kubectl get pods -l app=inflate --field-selector=status.phase=Running -o name | wc -l)
    printf '\r   %s/%s inflate pods Running' "$running" "$want"
    [ "$running" -eq "$want" ] && { echo; return 0; }
    if [ $SECONDS -ge $deadline ]; then
      echo; echo "demo: only $running/$want pods Running after 180s; see 'sandbox/sandbox controller logs' and 'kubectl get events'" >&2
      exit 1
    fi
    sleep 2
  done
}

step "the sandbox: an EKS-shaped cluster on 127.0.0.1"
sandbox/sandbox up
eval "$(sandbox/sandbox env)"

step "building karpctl and the controller"
cargo build --locked -q -p karpctl --bin karpctl && cargo build --locked -q -p karpctl-controller --bin karpctl-controller

step "karpctl init --cluster $KARPCTL_SANDBOX_CLUSTER --yes"
"$bin/karpctl" init --cluster "$KARPCTL_SANDBOX_CLUSTER" --yes

step "the controller, as its Deployment's ServiceAccount (the sandbox runs it as local processes)"
sandbox/sandbox controller start

step "a NodePool restricted to a few instance types, a pause Deployment at 0 replicas and its PDB"
kubectl apply -f examples/demo/nodepool.yaml -f examples/demo/inflate.yaml -f examples/demo/inflate-pdb.yaml

for replicas in 5 12; do
  step "kubectl scale deployment inflate --replicas $replicas"
  kubectl scale deployment inflate --replicas "$replicas"
  wait_running "$replicas"
  "$bin/karpctl" status
done

# The NodeClaim whose node runs the most inflate pods.
busiest=$(kubectl get pods -l app=inflate -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
claim=$(kubectl get nodeclaims -o jsonpath="{range .items[?(@.status.nodeName=='$busiest')]}{.metadata.name}{end}")
step "kubectl delete nodeclaim $claim (node $busiest, $(kubectl get pods -l app=inflate --field-selector spec.nodeName="$busiest" -o name | wc -l) inflate pods)"
echo "   the controller taints the node, evicts its pods within the PDB (maxUnavailable 1),"
echo "   launches capacity for them, and terminates the instance once the node is empty"
kubectl delete nodeclaim "$claim" --wait=false
deadline=$((SECONDS + 300))
while kubectl get nodeclaim "$claim" -o name >/dev/null 2>&1; do
  on_node=$(kubectl get pods -l app=inflate --field-selector spec.nodeName="$busiest" -o name 2>/dev/null | wc -l)
  running=$(kubectl get pods -l app=inflate --field-selector=status.phase=Running -o name | wc -l)
  drained=$(kubectl get nodeclaim "$claim" -o jsonpath='{.status.conditions[?(@.type=="Drained")].message}' 2>/dev/null || true)
  printf '\r   %s pods left on %s, %s/12 Running  %-60.60s' "$on_node" "$busiest" "$running" "$drained"
  if [ $SECONDS -ge $deadline ]; then
    echo; echo "demo: $claim still exists after 300s; see 'kubectl describe nodeclaim $claim'" >&2
    exit 1
  fi
  sleep 2
done
echo
wait_running 12
"$bin/karpctl" status

# Waits until the demo pool is down to `want` NodeClaims, none deleting, with every replica
# Running: consolidation (consolidateAfter 30s, then its 15 s re-check) deletes emptied nodes
# and replaces the rest by cheaper ones, draining each within the PDB.
wait_consolidated() {
  local want=$1 replicas=$2 deadline=$((SECONDS + 420)) claims deleting running
  while :; do
    claims=$(kubectl get nodeclaims -l karpenter.sh/nodepool=demo -o name | wc -l)
    deleting=$(kubectl get nodeclaims -l karpenter.sh/nodepool=demo -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name}{"\n"}{end}' | grep -c . || true)
    running=$(kubectl get pods -l app=inflate --field-selector=status.phase=Running -o name | wc -l)
    printf '\r   %s NodeClaims (%s being drained), %s/%s inflate pods Running   ' "$claims" "$deleting" "$running" "$replicas"
    [ "$claims" -le "$want" ] && [ "$deleting" -eq 0 ] && [ "$running" -eq "$replicas" ] && { echo; return 0; }
    if [ $SECONDS -ge $deadline ]; then
      echo; echo "demo: still $claims NodeClaims after 420s; see 'karpctl explain node NAME' and 'sandbox/sandbox controller logs'" >&2
      exit 1
    fi
    sleep 3
  done
}

for replicas in 5 1; do
  step "kubectl scale deployment inflate --replicas $replicas: consolidation"
  kubectl scale deployment inflate --replicas "$replicas"
  wait_consolidated 1 "$replicas"
  "$bin/karpctl" status
done
node=$(kubectl get nodeclaims -l karpenter.sh/nodepool=demo -o jsonpath='{.items[0].status.nodeName}')
step "karpctl explain node $node: why the last node stays"
"$bin/karpctl" explain node "$node"

step "what the controller logged (kubectl logs ... | jq works the same on a real cluster)"
grep -h '"message":"\(computed new nodeclaim(s) to fit pod(s)\|launched nodeclaim\|disrupting node(s)\|evicted pod\|deleted nodeclaim\)"' "$KARPCTL_SANDBOX_DIR"/logs/karpctl-controller-*.log 2>/dev/null | tail -n 16 || true

cat <<'DONE'

Done. Try: `sandbox/sandbox kubectl get nodeclaims`, `karpctl status`,
`sandbox/sandbox controller logs`; clean up with `karpctl uninstall --cluster sandbox --yes`.
DONE
