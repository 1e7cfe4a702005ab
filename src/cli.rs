//! The command line, and only the command line: every flag of every subcommand is declared
//! here so `--help` and the code agree, and commands receive plain typed arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "karpctl",
    version,
    about = "Karpenter-style node autoscaling for an existing EKS cluster"
)]
pub struct Cli {
    /// How results are printed: human-readable text, or JSON (or YAML) for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// YAML: the same document as JSON; `migrate-from-cas` prints its NodePools and
    /// EC2NodeClasses as manifests for review or GitOps.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print karpctl's version and the Kubernetes and Karpenter API versions it speaks.
    Version,
    /// Set up Karpenter-style autoscaling on an existing EKS cluster, end to end.
    ///
    /// IAM, the interruption queue, node access, discovery tags, CRDs, the Cluster Autoscaler
    /// scaled down, the controller deployed and a default NodePool. Plans first,
    /// Terraform-style, then asks before applying; a second run changes nothing. Settings come
    /// from flags, a karpctl.yaml (`-f`), or — in a terminal without --cluster — a guided setup.
    Init(InitArgs),
    /// Show what the controller launched: every NodeClaim with its type, capacity type, zone,
    /// node, readiness and $/hour, how many pods run and wait, and why the pending ones wait.
    Status {
        /// kubeconfig context (default: the current context, as kubectl uses).
        #[arg(long)]
        context: Option<String>,
    },
    /// Remove what `init` set up, only what karpctl owns (by its tags, labels and markers).
    ///
    /// Restores the Cluster Autoscaler, then deletes karpctl's CRDs, node access, discovery
    /// tags, controller identity, role and policies, interruption rules and queue, and the
    /// node role; plans first, then asks. The Spot service-linked role and the Pod Identity
    /// agent add-on are shared and kept. Anything still tagged for the cluster is reported.
    Uninstall(UninstallArgs),
    /// Move a cluster from Cluster Autoscaler and managed node groups onto NodePools, in
    /// waves, with a way back.
    ///
    /// Preflight (per workload: no PDB, one replica, a PDB that never allows an eviction,
    /// `safe-to-evict: "false"`, hostPath volumes, pods pinned to labels no NodePool offers,
    /// critical add-ons, where the controller runs), one NodePool per node group accepting the
    /// same pods, then: init if not done (Cluster Autoscaler to 0, replicas recorded), each
    /// group's scaling config recorded in kube-system/karpctl-state, and waves — cordon, drain
    /// with the controller's rules, wait for the pods to run again, lower the group. Re-running
    /// resumes; `--rollback` restores everything recorded.
    MigrateFromCas(MigrateArgs),
    /// Convert v1beta1 NodePools, NodeClaims and EC2NodeClasses to v1, noting every change.
    ///
    /// Converted manifests go to stdout, notes to stderr; other objects pass through unchanged.
    Convert {
        /// Manifest file to read (`-` for stdin); repeat to convert files together.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Plan the NodeClaims Karpenter would launch for pending workloads, and what they cost.
    ///
    /// Reads Pods, Deployments, ReplicaSets, StatefulSets, Jobs (replicas expanded),
    /// DaemonSets, Nodes with their bound Pods, NodePools and EC2NodeClasses (v1 or v1beta1).
    Simulate {
        /// Manifest file to read (`-` for stdin); repeat for several files.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        catalogue: CatalogueArgs,
    },
    /// Explain, for one pending pod, why each existing node and instance type is or is not
    /// a place for it (`explain POD -f FILE`); or, from the live cluster, why a node is or is
    /// not being disrupted (`explain node NAME`: the controller's verdict, its blockers and
    /// the current vs best replacement price).
    Explain {
        /// The pod: `name` or `namespace/name`; replicas are named `<workload>-<index>`. Or
        /// the word `node`, followed by a Node or NodeClaim name.
        pod: String,
        /// With `node`: the Node (or NodeClaim) name.
        name: Option<String>,
        /// Manifest file to read (`-` for stdin); repeat for several files.
        #[arg(short = 'f', long = "filename", required_unless_present = "name")]
        files: Vec<PathBuf>,
        /// With `node`: kubeconfig context (default: the current context).
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        catalogue: CatalogueArgs,
    },
    /// Check an installed cluster, read-only: one pass/fail line per check, with the fix.
    ///
    /// The node role and instance profiles, the controller's identity (Pod Identity
    /// association or IRSA trust), node access (access entry or aws-auth), discovery tags,
    /// the CRDs' version, the controller Ready with a leader, every NodePool and EC2NodeClass
    /// Ready, the interruption queue and its policy, and all five rules targeting it.
    /// Exit code 1 when any check fails.
    Doctor(DoctorArgs),
    /// Write what `init` would apply to the cluster as plain manifests, for GitOps.
    ///
    /// The CRDs, the controller's ServiceAccount, RBAC, Deployment, PDB and Service, and the
    /// default EC2NodeClass and NodePool — built by the same code as `init` from the same
    /// settings — as one YAML stream on stdout, or with --out-dir a kustomize-ready directory
    /// plus the AWS side (IAM policy and trust documents, queue policy, rule patterns) for
    /// review. Reads the cluster's description from AWS; changes nothing anywhere. The AWS
    /// side itself is still created by `init` (or your own tooling from these documents).
    Render(RenderArgs),
    /// Print a shell completion script for karpctl on stdout.
    ///
    /// bash: `karpctl completion bash > ~/.local/share/bash-completion/completions/karpctl`;
    /// zsh: `karpctl completion zsh > "${fpath[1]}/_karpctl"`; fish:
    /// `karpctl completion fish > ~/.config/fish/completions/karpctl.fish`; PowerShell:
    /// `karpctl completion powershell | Out-String | Invoke-Expression` in your $PROFILE.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write karpctl's manual pages: karpctl.1 and one page per subcommand (karpctl-init.1, ...).
    Man {
        /// Directory to write the pages into (created if missing); without it, karpctl.1 goes
        /// to stdout.
        #[arg(long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// List instance types: all of the catalogue, or those a NodePool allows, with capacity,
    /// allocatable, max pods, price per offering and labels.
    InstanceTypes {
        /// Manifest files holding the NodePool (and its EC2NodeClass).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Only the types this NodePool allows.
        #[arg(long = "node-pool", requires = "files")]
        node_pool: Option<String>,
        #[command(flatten)]
        catalogue: CatalogueArgs,
    },
}

/// Where instance types and prices come from.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogueArgs {
    /// AWS region [default: resolved as the AWS CLI does: AWS_REGION, then the profile,
    /// else us-east-1]. Prices are the shipped us-east-1 list, scaled per region.
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile whose `region` is used (default: AWS_PROFILE, then `default`); no
    /// credentials are needed.
    #[arg(long)]
    pub profile: Option<String>,
    /// Availability zones to offer capacity in (default: <region>a,b,c).
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
    /// Instance-type data in the shipped `instance-types.json` format instead of the shipped data.
    #[arg(long = "instance-types", value_name = "FILE")]
    pub instance_types: Option<PathBuf>,
    /// Offer spot capacity (prices synthesized from on-demand; NodePools still decide). Default.
    #[arg(long, overrides_with = "no_spot")]
    pub spot: bool,
    /// Offer on-demand capacity only.
    #[arg(long = "no-spot", overrides_with = "spot")]
    pub no_spot: bool,
}

/// `karpctl init`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Print the plan and exit without changing anything.
    #[arg(long)]
    pub plan: bool,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// With --plan: exit 0 when there is nothing to do, 2 when there are changes.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Print the IAM policy that whoever runs init and uninstall for this cluster needs
    /// (docs/iam.md), and change nothing.
    #[arg(long = "print-installer-policy")]
    pub print_installer_policy: bool,
    /// Take over IAM roles, policies, the interruption queue and rules that already exist
    /// with init's names but are not karpctl's (the plan names each); without it init stops.
    #[arg(long)]
    pub adopt: bool,
}

/// `karpctl render`'s flags: init's settings, and where the manifests go.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Write a directory instead of one YAML stream on stdout: `cluster/` (one file per
    /// object and a kustomization.yaml) and `aws/` (the IAM policy and trust documents, the
    /// queue policy and the rules' event patterns). Existing files of the same names are
    /// replaced.
    #[arg(long = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// What `init` decides, shared by `init` and `render` so both build the same desired state.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// The EKS cluster to set up (asked in a terminal when missing; required otherwise).
    #[arg(long)]
    pub cluster: Option<String>,
    /// A karpctl.yaml with everything init decides; flags given as well win over it.
    #[arg(long, short = 'f')]
    pub file: Option<std::path::PathBuf>,
    /// AWS region (default: resolved as the AWS CLI does: AWS_REGION, then the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config (default: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// kubeconfig context for the cluster (default: the current context, as kubectl uses).
    #[arg(long)]
    pub context: Option<String>,
    /// How the controller gets AWS credentials (default: Pod Identity when the cluster
    /// supports it, else IRSA).
    #[arg(long, value_enum)]
    pub identity: Option<IdentityArg>,
    /// Namespace of the controller (default: kube-system).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the controller's service account (default: karpenter).
    #[arg(long = "service-account")]
    pub service_account: Option<String>,
    /// The controller's container image.
    #[arg(long)]
    pub image: Option<String>,
    /// Capacity types of the default NodePool: on-demand, spot (default: on-demand).
    #[arg(long = "capacity-types", value_delimiter = ',')]
    pub capacity_types: Option<Vec<String>>,
    /// Instance categories of the default NodePool (default: c,m,r).
    #[arg(long = "instance-categories", value_delimiter = ',')]
    pub instance_categories: Option<Vec<String>>,
    /// The default NodePool's CPU limit, in cores (default: 1000).
    #[arg(long = "cpu-limit")]
    pub cpu_limit: Option<String>,
}

/// `karpctl doctor`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// The EKS cluster to check.
    #[arg(long)]
    pub cluster: String,
    /// AWS region (default: resolved as the AWS CLI does: AWS_REGION, then the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config (default: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// kubeconfig context for the cluster (default: the current context, as kubectl uses).
    #[arg(long)]
    pub context: Option<String>,
}

/// `karpctl uninstall`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// The EKS cluster to take back.
    #[arg(long)]
    pub cluster: String,
    /// AWS region (default: resolved as the AWS CLI does: AWS_REGION, then the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config (default: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// kubeconfig context for the cluster (default: the current context, as kubectl uses).
    #[arg(long)]
    pub context: Option<String>,
    /// Print the plan and exit without changing anything.
    #[arg(long)]
    pub plan: bool,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// With --plan: exit 0 when there is nothing to do, 2 when there are changes.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Namespace of the controller's service account [default: what init recorded in
    /// kube-system/karpctl-state, else kube-system].
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the controller's service account [default: what init recorded, else karpenter].
    #[arg(long = "service-account")]
    pub service_account: Option<String>,
}

/// `karpctl migrate-from-cas`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The EKS cluster to migrate.
    #[arg(long)]
    pub cluster: String,
    /// AWS region (default: resolved as the AWS CLI does: AWS_REGION, then the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config (default: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// kubeconfig context for the cluster (default: the current context, as kubectl uses).
    #[arg(long)]
    pub context: Option<String>,
    /// A karpctl.yaml: its settings and NodePools win over the proposed ones of the same name.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Print the preflight and the plan (or with -o yaml the NodePools and EC2NodeClasses)
    /// and change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Nodes cordoned and drained together.
    #[arg(long = "wave-size", default_value_t = 1)]
    pub wave_size: usize,
    /// Wait between waves (e.g. 30s, 5m).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub pause: std::time::Duration,
    /// How long a `karpenter.sh/do-not-disrupt` or `safe-to-evict: "false"` pod holds its
    /// node; then it is evicted (its PodDisruptionBudget still applies).
    #[arg(long = "hold-timeout", default_value = "5m", value_parser = parse_duration)]
    pub hold_timeout: std::time::Duration,
    /// A wave whose nodes are not drained by then stops the run, naming what holds them.
    #[arg(long = "drain-timeout", default_value = "15m", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Health gate: a pod Pending longer than this stops the run.
    #[arg(long = "pending-limit", default_value = "5m", value_parser = parse_duration)]
    pub pending_limit: std::time::Duration,
    /// Node groups that keep nodes for the controller (default: the group running the
    /// most critical add-ons).
    #[arg(long)]
    pub keep: Vec<String>,
    /// Go ahead despite preflight blockers.
    #[arg(long = "accept-blockers")]
    pub accept_blockers: bool,
    /// Undo the migration from any state: restore the recorded node group sizes and Cluster
    /// Autoscaler replicas, uncordon, and delete the NodePools the migration created.
    #[arg(long)]
    pub rollback: bool,
}

/// `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration (e.g. 30s, 5m, 1h)")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityArg {
    /// EKS Pod Identity (an association for the service account).
    PodIdentity,
    /// IAM roles for service accounts (the cluster's OIDC provider).
    Irsa,
}
