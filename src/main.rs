//! `sendfleet`: one binary, four jobs.
//!
//! - `operator`: reconcile SendingPool/DomainPolicy/WarmupPlan into Postfix
//!   instances (Kubernetes controller).
//! - `agent`: run beside Postfix in every instance pod.
//! - `crd`: print the CustomResourceDefinitions.
//! - `render`: turn resource YAML into objects and Postfix files, offline.
//!
//! This file only parses arguments and hands off; no business logic.
#![forbid(unsafe_code)]

use sendfleet::{agent, cli, operator};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sendfleet", version, about = "Kubernetes operator for a self-hosted Postfix sending fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the sendfleet CustomResourceDefinitions as YAML.
    Crd {
        /// Write one file per CRD into this directory instead (crds/).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Render resources (YAML files) into Kubernetes objects and Postfix files, offline.
    Render(cli::render::RenderArgs),
    /// Run the operator (Kubernetes controller).
    Operator(operator::OperatorArgs),
    /// Run the instance agent beside Postfix.
    Agent(agent::AgentArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir: None } => {
            print!("{}", cli::crd::all_crds_yaml()?);
            Ok(())
        }
        Command::Crd { out_dir: Some(dir) } => {
            for (name, yaml) in cli::crd::crd_files()? {
                std::fs::write(dir.join(name), yaml)?;
            }
            Ok(())
        }
        Command::Render(args) => cli::render::run(args),
        Command::Operator(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(operator::run(args))
        }
        Command::Agent(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(agent::run(args))
        }
    }
}
