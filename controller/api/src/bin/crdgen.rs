//! Prints the karpctl CRDs as one multi-document YAML stream, for `kubectl apply -f -` or review.
//!
//! Run `K8S_OPENAPI_ENABLED_VERSION=1.37 cargo run -p karpctl-api --bin crdgen` (a library crate
//! does not pick a Kubernetes version itself; tests do via dev-dependencies).

fn main() -> std::process::ExitCode {
    match karpctl_api::crd::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: rendering CRDs: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
