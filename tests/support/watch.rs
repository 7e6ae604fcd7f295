//! A log of what a watched object carried, in order: the one watcher every test that asserts
//! a sequence of weights shares (an HTTPRoute's, a canary Ingress's, a TrafficSplit's, a
//! VirtualService's, an ALB action's).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

/// Every state one object (or every object of the watched kind) went through, in order, as a
/// watch sees it; a state equal to the last one logged is not logged again.
pub struct ObjectLog<T> {
    seen: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + PartialEq + Send + 'static> ObjectLog<T> {
    /// Watches `api`: the object `name` (every object when None), starting the log with
    /// `first`. `read` gives an object's state (None: nothing to log), and a deletion logs
    /// `deleted` when given. A failed watch (the API server restarted) is retried with
    /// backoff, not the end of the log.
    pub fn start<K>(
        api: kube::Api<K>,
        name: Option<&str>,
        first: Vec<T>,
        read: impl Fn(&K) -> Option<T> + Send + 'static,
        deleted: Option<T>,
    ) -> ObjectLog<T>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(first));
        let sink = seen.clone();
        let name = name.map(str::to_owned);
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let named = |object: &K| {
                    name.as_deref()
                        .is_none_or(|name| object.meta().name.as_deref() == Some(name))
                };
                let logged = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) if named(&o) => {
                        read(&o)
                    }
                    Ok(watcher::Event::Delete(o)) if named(&o) => deleted.clone(),
                    _ => continue,
                };
                let Some(logged) = logged else { continue };
                let mut seen = sink.lock().unwrap_or_else(|e| e.into_inner());
                if seen.last() != Some(&logged) {
                    seen.push(logged);
                }
            }
        });
        ObjectLog { seen, task }
    }

    /// Every state logged so far, in order.
    pub fn states(&self) -> Vec<T> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<T> Drop for ObjectLog<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
