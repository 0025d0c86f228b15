//! `vm create` (VMs, ARM templates or test migrations of a plan's machines)
//! and `cleanup --test`.

use std::process::ExitCode;

use ebs2azure::azure::Session;
use ebs2azure::machines::{test_run, vm};
use ebs2azure::plan::model::Machine;
use ebs2azure::plan::Plan;

use crate::args::{AzureConn, Command, LimitArgs, VmCommand};
use crate::{print, said};

/// The plan, the chosen machines and a session.
fn open(
    plan: &std::path::Path,
    machines: &[String],
    azure: &AzureConn,
    limits: &LimitArgs,
) -> Result<(Plan, Vec<usize>, Session), String> {
    let fallback = ebs2azure::plan::schema::Common {
        subscription: azure.subscription.clone(),
        resource_group: azure.resource_group.clone(),
        ..Default::default()
    };
    let p = Plan::load(plan, &fallback).map_err(said)?;
    for m in machines {
        if !p.machines.iter().any(|x| x.name.eq_ignore_ascii_case(m)) {
            return Err(format!("the plan has no machine named {m:?}"));
        }
    }
    let chosen = (0..p.machines.len())
        .filter(|&i| {
            let m = &p.machines[i];
            !m.exclude
                && (machines.is_empty() || machines.iter().any(|x| x.eq_ignore_ascii_case(&m.name)))
        })
        .collect();
    let opts = azure.options(limits, None);
    let session = Session::new(
        &opts.azure,
        opts.token_file.as_deref(),
        opts.disk_token_file.as_deref(),
    )
    .map_err(said)?;
    Ok((p, chosen, session))
}

fn exit(result: Result<bool, String>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            print::error(&e);
            ExitCode::FAILURE
        }
    }
}

/// A test run's id from the clock: `test-YYYYMMDDTHHMMSSZ`.
fn run_id_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = ebs2azure::info::utc_string(secs);
    format!("test-{}", t.replace(['-', ':'], ""))
}

/// Runs a `vm` command; the exit code says whether every machine got its VM.
pub fn command(c: VmCommand) -> ExitCode {
    let VmCommand::Create {
        plan,
        machine,
        emit_template,
        test,
        run_id,
        azure,
        limits,
        json,
    } = c;
    exit((|| -> Result<bool, String> {
        let (p, chosen, session) = open(&plan, &machine, &azure, &limits)?;
        if let Some(dir) = &emit_template {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let run = run_id.unwrap_or_else(run_id_now);
        let mut results = Vec::new();
        for m in chosen.iter().map(|&i| &p.machines[i]) {
            let made = make(
                &session,
                &p,
                m,
                emit_template.as_deref(),
                test.then_some(run.as_str()),
            );
            let (ok, text) = match made {
                Ok(t) => (true, t),
                Err(e) => (false, said(e)),
            };
            if !ok && !json {
                print::error(&text);
            }
            results.push((m.name.clone(), ok, text));
        }
        print::print_vm_results(&results, emit_template.is_some(), json)?;
        if test && results.iter().any(|r| r.1) {
            print::note_line(&format!(
                "test run {run}: `ebs2azure cleanup --test --plan {} --run-id {run}` removes it",
                plan.display()
            ));
        }
        Ok(results.iter().all(|r| r.1))
    })())
}

/// One machine's VM, template or test migration.
fn make(
    session: &Session,
    p: &Plan,
    m: &Machine,
    template_dir: Option<&std::path::Path>,
    test: Option<&str>,
) -> Result<String, vm::Error> {
    if let Some(run) = test {
        return test_run::create(session, p, m, run);
    }
    let spec = vm::spec(session, p, m)?;
    match template_dir {
        Some(dir) => {
            let path = dir.join(format!("{}.json", m.name));
            let text = serde_json::to_string_pretty(&vm::template(&spec)).unwrap_or_default();
            ebs2azure::plan::state::write_atomically(&path, text.as_bytes())
                .map(|()| path.display().to_string())
                .map_err(|e| vm::Error::Incomplete {
                    machine: m.name.clone(),
                    what: format!("cannot write {}: {e}", path.display()),
                })
        }
        None => vm::create(session, &spec),
    }
}

/// `cleanup --test`: the exit code says whether every clean-up call went through.
pub fn cleanup(c: Command) -> ExitCode {
    let Command::Cleanup {
        plan,
        run_id,
        machine,
        azure,
        limits,
        json,
        ..
    } = c
    else {
        unreachable!("cleanup() is called for the cleanup command only")
    };
    exit((|| -> Result<bool, String> {
        let (p, chosen, session) = open(&plan, &machine, &azure, &limits)?;
        let mut all = Vec::new();
        let mut ok = true;
        for m in chosen.iter().map(|&i| &p.machines[i]) {
            match test_run::cleanup(&session, &p, m, run_id.as_deref()) {
                Ok(done) => all.extend(done),
                Err(e) => {
                    ok = false;
                    print::error(&said(e));
                }
            }
        }
        print::print_cleanup(&all, json)?;
        Ok(ok)
    })())
}
