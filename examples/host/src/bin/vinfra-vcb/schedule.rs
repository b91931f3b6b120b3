//! The schedule configuration file `vinfra-vcb schedule` reads, and its state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vinfra_vcb::{JobConfig, JobState};

/// `schedule.json`: backup jobs with cron expressions, and what to keep.
///
/// ```json
/// { "state": "/var/lib/vcb/schedule-state.json",
///   "jobs": [ { "name": "web", "cron": "30 2 * * *", "vm": "web",
///               "disks": { "disk0": "/vms/web/disk0.img" },
///               "pre": "sync", "post": "true" } ],
///   "keep": { "last": 3, "daily": 7, "weekly": 4, "monthly": 12 } }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Where the jobs' progress is kept (so a run after downtime catches up once).
    pub state: PathBuf,
    pub jobs: Vec<Job>,
    /// Retention applied (forget, then prune) after each successful job.
    #[serde(default)]
    pub keep: Option<Keep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    pub cron: String,
    pub vm: String,
    /// Disk name -> raw image path.
    pub disks: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub pre: Option<String>,
    #[serde(default)]
    pub post: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub jobs: Vec<JobState>,
}

impl ScheduleFile {
    pub fn load(path: &Path) -> Result<ScheduleFile, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn job_configs(&self) -> Vec<JobConfig> {
        self.jobs
            .iter()
            .map(|j| JobConfig {
                name: j.name.clone(),
                cron: j.cron.clone(),
            })
            .collect()
    }

    pub fn load_state(&self) -> Result<Vec<JobState>, String> {
        match std::fs::read_to_string(&self.state) {
            Ok(t) => serde_json::from_str::<StateFile>(&t)
                .map(|s| s.jobs)
                .map_err(|e| format!("{}: {e}", self.state.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("read {}: {e}", self.state.display())),
        }
    }

    /// Writes the state atomically (a temporary file renamed over the old one).
    pub fn save_state(&self, jobs: Vec<JobState>) -> Result<(), String> {
        let tmp = self.state.with_extension("tmp");
        let text = serde_json::to_string_pretty(&StateFile { jobs }).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.state)
            .map_err(|e| format!("rename to {}: {e}", self.state.display()))
    }
}
