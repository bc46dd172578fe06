//! Per-volume in-flight guard: a second concurrent operation on the same volume gets ABORTED,
//! as the CSI spec recommends, instead of racing the first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{CsiError, Result};

#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

pub struct Guard {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    pub fn try_lock(&self, key: &str) -> Result<Guard> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(key.to_string()) {
            return Err(CsiError::Aborted(format!(
                "an operation on {key} is already in progress; retry later"
            )));
        }
        Ok(Guard {
            set: self.0.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_aborted_until_the_first_drops() {
        let f = InFlight::default();
        let g = f.try_lock("v").unwrap();
        assert!(matches!(f.try_lock("v"), Err(CsiError::Aborted(_))));
        assert!(f.try_lock("w").is_ok());
        drop(g);
        assert!(f.try_lock("v").is_ok());
    }
}
