//! `vm create`: a plan's machines as Azure VMs, or as ARM templates.

use std::process::ExitCode;

use ebs2azure::azure::Session;
use ebs2azure::machines::vm;
use ebs2azure::plan::Plan;

use crate::args::VmCommand;
use crate::{print, said};

/// Runs a `vm` command; the exit code says whether every machine got its VM.
pub fn command(c: VmCommand) -> ExitCode {
    let VmCommand::Create {
        plan,
        machine,
        emit_template,
        azure,
        limits,
        json,
    } = c;
    let result = (|| -> Result<bool, String> {
        let fallback = ebs2azure::plan::schema::Common {
            subscription: azure.subscription.clone(),
            resource_group: azure.resource_group.clone(),
            ..Default::default()
        };
        let p = Plan::load(&plan, &fallback).map_err(said)?;
        for m in &machine {
            if !p.machines.iter().any(|x| x.name.eq_ignore_ascii_case(m)) {
                return Err(format!("the plan has no machine named {m:?}"));
            }
        }
        let opts = azure.options(&limits, None);
        let session = Session::new(&opts.azure, opts.token_file.as_deref()).map_err(said)?;
        if let Some(dir) = &emit_template {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut all = true;
        let mut results = Vec::new();
        for m in p.machines.iter().filter(|m| {
            !m.exclude
                && (machine.is_empty() || machine.iter().any(|x| x.eq_ignore_ascii_case(&m.name)))
        }) {
            let made = vm::spec(&session, &p, m).and_then(|spec| match &emit_template {
                Some(dir) => {
                    let path = dir.join(format!("{}.json", m.name));
                    let text =
                        serde_json::to_string_pretty(&vm::template(&spec)).unwrap_or_default();
                    ebs2azure::plan::state::write_atomically(&path, text.as_bytes())
                        .map(|()| path.display().to_string())
                        .map_err(|e| vm::Error::Incomplete {
                            machine: m.name.clone(),
                            what: format!("cannot write {}: {e}", path.display()),
                        })
                }
                None => vm::create(&session, &spec),
            });
            let (ok, text) = match made {
                Ok(t) => (true, t),
                Err(e) => (false, said(e)),
            };
            all &= ok;
            if !ok && !json {
                print::error(&text);
            }
            results.push((m.name.clone(), ok, text));
        }
        print::print_vm_results(&results, emit_template.is_some(), json)?;
        Ok(all)
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            print::error(&e);
            ExitCode::FAILURE
        }
    }
}
