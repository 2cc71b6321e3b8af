//! The control plane's in-memory view of the store, and the one way to
//! change it: a batch of writes queued to the store as one transaction
//! (compare-and-swap on every revision the batch read, and on the revision
//! it will get) and applied to memory at once, under the state's lock; the
//! caller may let go of the lock and then wait until the store has made it
//! durable ([`Durable`]), so that requests share the store's fsyncs. What
//! is not durable yet reaches no one: every API answer waits until the
//! store is durable past what it could have read (`api/http.rs`), and
//! messages to agents until the store is durable past what they were sent
//! after (`agents.rs`). A crash loses only what was not yet answered:
//! memory is rebuilt from the store on start; a failed commit makes the
//! store refuse the rest until memory is rebuilt from it
//! ([`State::reload`]).

use crate::core::discovery::Registry;
use crate::core::instances::{Usage, account};
use crate::core::model::{Cluster, ContainerInstance, Task};
use crate::core::security_groups::SecurityGroup;
use crate::core::services::Service;
use crate::core::store::StoreFuture;
use crate::core::store::{Compare, Op, StateStore, Txn};
use crate::core::taskdef::TaskDefinition;
use crate::error::ApiError;
use crate::plane::elb::config::Config as ElbConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A value and the store revision it was read at.
#[derive(Debug, Clone)]
pub(crate) struct Entry<T> {
    pub value: T,
    pub revision: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// By name.
    pub clusters: BTreeMap<String, Entry<Cluster>>,
    /// By family, then revision.
    pub taskdefs: BTreeMap<String, BTreeMap<u32, Entry<TaskDefinition>>>,
    /// By task id.
    pub tasks: BTreeMap<String, Entry<Task>>,
    /// By ARN.
    pub instances: BTreeMap<String, Entry<ContainerInstance>>,
    /// By `CLUSTER/NAME`.
    pub services: BTreeMap<String, Entry<Service>>,
    /// Security groups, by id.
    pub security_groups: BTreeMap<String, Entry<SecurityGroup>>,
    /// Service discovery's namespaces and services (one document).
    pub discovery: Registry,
    pub discovery_revision: Option<u64>,
    /// Load balancers, target groups, listeners and rules (one document).
    pub elb: ElbConfig,
    pub elb_revision: Option<u64>,
    /// ECS account settings (one document).
    pub account: crate::core::account::AccountSettings,
    pub account_revision: Option<u64>,
    /// ECR's tags, policies and scanning rules (one document).
    pub ecr: crate::core::ecr::EcrMeta,
    pub ecr_revision: Option<u64>,
    /// RunTask client tokens → the task ids they made.
    pub client_tokens: HashMap<String, Vec<String>>,
    /// The ids of services' tasks, by their service's key: the scheduler
    /// reads a service's tasks without walking every task.
    service_tasks: HashMap<String, BTreeSet<String>>,
    /// What the tasks not STOPPED use, by instance ARN, kept as tasks
    /// change.
    usage: HashMap<String, Usage>,
    /// The store revision of the last change queued: the next gets the one
    /// after.
    revision: u64,
}

/// A change applied to memory and queued to the store: resolves once it
/// is durable.
#[must_use = "a change is not durable until its Durable resolves"]
pub(crate) struct Durable(Option<StoreFuture<'static, Option<u64>>>);

impl Durable {
    /// Once the change is durable; an error (the server's) if the store
    /// failed it, and memory is to be reloaded ([`State::reload`]).
    pub async fn wait(self) -> Result<(), ApiError> {
        let Some(commit) = self.0 else {
            return Ok(());
        };
        match commit.await? {
            Some(_) => Ok(()),
            None => Err(ApiError::server(
                "the state store changed under this control plane (is another one using it?)",
            )),
        }
    }
}

/// The key of the service that started `t` (`CLUSTER/NAME`), if one did.
pub(crate) fn service_of(t: &Task) -> Option<String> {
    let name = t.group.as_deref()?.strip_prefix("service:")?;
    t.started_by
        .as_deref()
        .is_some_and(|b| b.starts_with("ecs-svc/"))
        .then(|| format!("{}/{name}", crate::core::model::name_of(&t.cluster_arn)))
}

/// One object to write (or remove). Tasks dominate the writes, so their
/// variant is not boxed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Write {
    Cluster(Cluster),
    TaskDef(TaskDefinition),
    Task(Task),
    Instance(ContainerInstance),
    Service(Box<Service>),
    SecurityGroup(Box<SecurityGroup>),
    Discovery(Box<Registry>),
    Elb(Box<ElbConfig>),
    Account(Box<crate::core::account::AccountSettings>),
    Ecr(Box<crate::core::ecr::EcrMeta>),
    RemoveTask(String),
    RemoveInstance(String),
    RemoveSecurityGroup(String),
}

fn cluster_key(name: &str) -> String {
    format!("clusters/{name}")
}
fn taskdef_key(family: &str, revision: u32) -> String {
    format!("taskdefs/{family}/{revision:010}")
}
fn service_key(key: &str) -> String {
    format!("services/{key}")
}
fn task_key(id: &str) -> String {
    format!("tasks/{id}")
}
const DISCOVERY_KEY: &str = "discovery/registry";
const ELB_KEY: &str = "elb/config";
const ACCOUNT_KEY: &str = "account/settings";
const ECR_KEY: &str = "ecr/meta";
fn security_group_key(id: &str) -> String {
    format!("securitygroups/{id}")
}
fn instance_key(arn: &str) -> String {
    format!("instances/{}", arn.rsplit('/').next().unwrap_or(arn))
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::server(format!("cannot encode state: {e}")))
}

fn compare(key: &str, revision: Option<u64>) -> Compare {
    match revision {
        Some(r) => Compare::Revision(key.to_string(), r),
        None => Compare::Absent(key.to_string()),
    }
}

async fn load<T: DeserializeOwned>(
    store: &dyn StateStore,
    prefix: &str,
) -> Result<Vec<Entry<T>>, ApiError> {
    let mut out = Vec::new();
    for (key, v) in store.range(prefix).await? {
        let value = serde_json::from_slice(&v.value)
            .map_err(|e| ApiError::server(format!("the state store holds a corrupt {key}: {e}")))?;
        out.push(Entry {
            value,
            revision: v.revision,
        });
    }
    Ok(out)
}

impl State {
    /// Everything the store holds.
    pub async fn load(store: &dyn StateStore) -> Result<State, ApiError> {
        let mut state = State {
            revision: store.revision().await?,
            ..State::default()
        };
        for c in load::<Cluster>(store, "clusters/").await? {
            state.clusters.insert(c.value.cluster_name.clone(), c);
        }
        for td in load::<TaskDefinition>(store, "taskdefs/").await? {
            state
                .taskdefs
                .entry(td.value.family.clone())
                .or_default()
                .insert(td.value.revision, td);
        }
        for t in load::<Task>(store, "tasks/").await? {
            if let Some(token) = &t.value.client_token {
                state
                    .client_tokens
                    .entry(token.clone())
                    .or_default()
                    .push(t.value.id().to_string());
            }
            state.index_task(&t.value);
            account(&mut state.usage, &t.value, 1);
            state.tasks.insert(t.value.id().to_string(), t);
        }
        for i in load::<ContainerInstance>(store, "instances/").await? {
            state
                .instances
                .insert(i.value.container_instance_arn.clone(), i);
        }
        for s in load::<Service>(store, "services/").await? {
            state.services.insert(s.value.key(), s);
        }
        for g in load::<SecurityGroup>(store, "securitygroups/").await? {
            state.security_groups.insert(g.value.group_id.clone(), g);
        }
        if let Some(d) = load::<Registry>(store, DISCOVERY_KEY).await?.pop() {
            state.discovery = d.value;
            state.discovery_revision = Some(d.revision);
        }
        if let Some(e) = load::<ElbConfig>(store, ELB_KEY).await?.pop() {
            state.elb = e.value;
            state.elb_revision = Some(e.revision);
        }
        if let Some(a) = load::<crate::core::account::AccountSettings>(store, ACCOUNT_KEY)
            .await?
            .pop()
        {
            state.account = a.value;
            state.account_revision = Some(a.revision);
        }
        if let Some(e) = load::<crate::core::ecr::EcrMeta>(store, ECR_KEY)
            .await?
            .pop()
        {
            state.ecr = e.value;
            state.ecr_revision = Some(e.revision);
        }
        Ok(state)
    }

    /// The tasks service `key` (`CLUSTER/NAME`) started, stopped ones
    /// included, in id order.
    pub fn tasks_of_service<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.service_tasks
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id).map(|t| &t.value))
    }

    /// The tasks on instance `arn` (FARGATE tasks it hosts included),
    /// stopped ones too. (A walk over every task: for rare events, an
    /// agent connecting or lost.)
    pub fn tasks_on<'a>(&'a self, arn: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .values()
            .map(|t| &t.value)
            .filter(move |t| t.runs_on() == Some(arn))
    }

    /// What the tasks not STOPPED use, by instance ARN.
    pub fn usage(&self) -> &HashMap<String, Usage> {
        &self.usage
    }

    fn index_task(&mut self, t: &Task) {
        if let Some(key) = service_of(t) {
            self.service_tasks
                .entry(key)
                .or_default()
                .insert(t.id().to_string());
        }
    }

    fn unindex_task(&mut self, key: &str, id: &str) {
        if let Some(ids) = self.service_tasks.get_mut(key) {
            ids.remove(id);
            if ids.is_empty() {
                self.service_tasks.remove(key);
            }
        }
    }

    /// After the store failed a change (memory holds changes it does not):
    /// what the store holds, read again once it accepts commits.
    pub async fn reload(&mut self, store: &dyn StateStore) -> Result<(), ApiError> {
        store.resume().await?;
        *self = State::load(store).await?;
        Ok(())
    }

    /// Commits `writes` to the store and to memory, all or nothing, and
    /// waits (holding the state) until they are durable.
    pub async fn apply(
        &mut self,
        store: &dyn StateStore,
        writes: Vec<Write>,
    ) -> Result<(), ApiError> {
        self.stage(store, writes)?.wait().await
    }

    /// Applies `writes` to memory and queues them to the store as one
    /// transaction: the caller may release the state, then wait on the
    /// answer until they are durable. (A failed commit makes the store
    /// refuse every later one until the state is reloaded.)
    pub fn stage(
        &mut self,
        store: &dyn StateStore,
        writes: Vec<Write>,
    ) -> Result<Durable, ApiError> {
        if writes.is_empty() {
            return Ok(Durable(None));
        }
        let revision = self.revision + 1;
        let mut txn = Txn {
            revision: Some(revision),
            ..Txn::default()
        };
        for w in &writes {
            let (key, revision, value) = match w {
                Write::Cluster(c) => (
                    cluster_key(&c.cluster_name),
                    self.clusters.get(&c.cluster_name).map(|e| e.revision),
                    Some(json(c)?),
                ),
                Write::TaskDef(td) => (
                    taskdef_key(&td.family, td.revision),
                    self.taskdefs
                        .get(&td.family)
                        .and_then(|f| f.get(&td.revision))
                        .map(|e| e.revision),
                    Some(json(td)?),
                ),
                Write::Task(t) => (
                    task_key(t.id()),
                    self.tasks.get(t.id()).map(|e| e.revision),
                    Some(json(t)?),
                ),
                Write::Instance(i) => (
                    instance_key(&i.container_instance_arn),
                    self.instances
                        .get(&i.container_instance_arn)
                        .map(|e| e.revision),
                    Some(json(i)?),
                ),
                Write::Service(svc) => (
                    service_key(&svc.key()),
                    self.services.get(&svc.key()).map(|e| e.revision),
                    Some(json(svc)?),
                ),
                Write::SecurityGroup(g) => (
                    security_group_key(&g.group_id),
                    self.security_groups.get(&g.group_id).map(|e| e.revision),
                    Some(json(g)?),
                ),
                Write::Discovery(d) => (
                    DISCOVERY_KEY.to_string(),
                    self.discovery_revision,
                    Some(json(d)?),
                ),
                Write::Elb(e) => (ELB_KEY.to_string(), self.elb_revision, Some(json(e)?)),
                Write::Account(a) => (
                    ACCOUNT_KEY.to_string(),
                    self.account_revision,
                    Some(json(a)?),
                ),
                Write::Ecr(e) => (ECR_KEY.to_string(), self.ecr_revision, Some(json(e)?)),
                Write::RemoveSecurityGroup(id) => (
                    security_group_key(id),
                    self.security_groups.get(id).map(|e| e.revision),
                    None,
                ),
                Write::RemoveTask(id) => {
                    (task_key(id), self.tasks.get(id).map(|e| e.revision), None)
                }
                Write::RemoveInstance(arn) => (
                    instance_key(arn),
                    self.instances.get(arn).map(|e| e.revision),
                    None,
                ),
            };
            txn.compares.push(compare(&key, revision));
            txn.ops.push(match value {
                Some(v) => Op::Put(key, v),
                None => Op::Delete(key),
            });
        }
        let durable = Durable(Some(store.commit(txn)));
        self.revision = revision;
        for w in writes {
            match w {
                Write::Cluster(c) => {
                    self.clusters
                        .insert(c.cluster_name.clone(), Entry { value: c, revision });
                }
                Write::TaskDef(td) => {
                    self.taskdefs.entry(td.family.clone()).or_default().insert(
                        td.revision,
                        Entry {
                            value: td,
                            revision,
                        },
                    );
                }
                Write::Task(t) => {
                    if let Some(token) = &t.client_token {
                        let ids = self.client_tokens.entry(token.clone()).or_default();
                        if !ids.iter().any(|i| i == t.id()) {
                            ids.push(t.id().to_string());
                        }
                    }
                    self.index_task(&t);
                    account(&mut self.usage, &t, 1);
                    if let Some(old) = self
                        .tasks
                        .insert(t.id().to_string(), Entry { value: t, revision })
                    {
                        account(&mut self.usage, &old.value, -1);
                    }
                }
                Write::Instance(i) => {
                    self.instances.insert(
                        i.container_instance_arn.clone(),
                        Entry { value: i, revision },
                    );
                }
                Write::Service(svc) => {
                    self.services.insert(
                        svc.key(),
                        Entry {
                            value: *svc,
                            revision,
                        },
                    );
                }
                Write::RemoveInstance(arn) => {
                    self.instances.remove(&arn);
                }
                Write::SecurityGroup(g) => {
                    self.security_groups.insert(
                        g.group_id.clone(),
                        Entry {
                            value: *g,
                            revision,
                        },
                    );
                }
                Write::RemoveSecurityGroup(id) => {
                    self.security_groups.remove(&id);
                }
                Write::Discovery(d) => {
                    self.discovery = *d;
                    self.discovery_revision = Some(revision);
                }
                Write::Elb(e) => {
                    self.elb = *e;
                    self.elb_revision = Some(revision);
                }
                Write::Account(a) => {
                    self.account = *a;
                    self.account_revision = Some(revision);
                }
                Write::Ecr(e) => {
                    self.ecr = *e;
                    self.ecr_revision = Some(revision);
                }
                Write::RemoveTask(id) => {
                    if let Some(key) = self.tasks.get(&id).and_then(|t| service_of(&t.value)) {
                        self.unindex_task(&key, &id);
                    }
                    if let Some(t) = self.tasks.get(&id) {
                        account(&mut self.usage, &t.value, -1);
                    }
                    if let Some(t) = self.tasks.remove(&id)
                        && let Some(token) = &t.value.client_token
                        && let Some(ids) = self.client_tokens.get_mut(token)
                    {
                        ids.retain(|i| *i != id);
                        if ids.is_empty() {
                            self.client_tokens.remove(token);
                        }
                    }
                }
            }
        }
        Ok(durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::SqliteStore;
    use serde_json::json;

    fn task(id: &str, status: &str, port: Option<u16>) -> Task {
        serde_json::from_value(json!({
            "taskArn": format!("arn:aws:ecs:r:0:task/default/{id}"),
            "clusterArn": "arn:aws:ecs:r:0:cluster/default",
            "taskDefinitionArn": "td:1", "overrides": {}, "lastStatus": status,
            "desiredStatus": "RUNNING", "cpu": "256", "memory": "64", "launchType": "EC2",
            "version": 1, "createdAt": 1.0, "group": "service:web", "startedBy": "ecs-svc/1",
            "containerInstanceArn": "arn:ci/1",
            "containers": [{"containerArn": "c/a", "taskArn": "t", "name": "a", "image": "x",
                "lastStatus": status, "cpu": "0",
                "networkBindings": port.map(|p| json!([{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": p, "protocol": "tcp"}])).unwrap_or(json!([]))}],
        }))
        .unwrap()
    }

    /// What the tasks use, summed from scratch.
    fn summed(state: &State) -> HashMap<String, Usage> {
        let mut all = HashMap::new();
        for t in state.tasks.values() {
            account(&mut all, &t.value, 1);
        }
        all
    }

    #[tokio::test]
    async fn usage_and_service_index_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let mut state = State::default();
        let steps: Vec<Vec<Write>> = vec![
            vec![
                Write::Task(task("a", "PENDING", Some(8080))),
                Write::Task(task("b", "PENDING", None)),
            ],
            vec![Write::Task(task("a", "RUNNING", Some(8080)))],
            vec![Write::Task(task("b", "RUNNING", Some(8081)))],
            vec![Write::Task(task("a", "STOPPED", Some(8080)))],
            vec![Write::RemoveTask("a".into())],
            vec![Write::RemoveTask("b".into())],
        ];
        for (i, writes) in steps.into_iter().enumerate() {
            state.apply(&store, writes).await.unwrap();
            assert_eq!(state.usage, summed(&state), "after step {i}");
            let indexed: Vec<&str> = state
                .tasks_of_service("default/web")
                .map(|t| t.id())
                .collect();
            let all: Vec<&str> = state.tasks.values().map(|t| t.value.id()).collect();
            assert_eq!(indexed, all, "after step {i}");
        }
        assert!(state.usage.is_empty());
        let u = {
            state
                .apply(&store, vec![Write::Task(task("c", "RUNNING", Some(9000)))])
                .await
                .unwrap();
            state.usage["arn:ci/1"].clone()
        };
        assert_eq!((u.cpu, u.memory, u.slots, u.running), (256, 64, 1, 1));
        assert_eq!(u.tcp, [9000]);
        // Rebuilt from the store, the same.
        let loaded = State::load(&store).await.unwrap();
        assert_eq!(loaded.usage, state.usage);
    }

    #[tokio::test]
    async fn staged_changes_are_seen_at_once_and_a_failed_one_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let mut state = State::load(&store).await.unwrap();
        let first = state
            .stage(&store, vec![Write::Task(task("a", "PENDING", None))])
            .unwrap();
        let second = state
            .stage(&store, vec![Write::Task(task("a", "RUNNING", Some(80)))])
            .unwrap();
        // In memory before either is durable; the second compares against
        // the revision the first will get.
        assert_eq!(state.tasks["a"].value.last_status, "RUNNING");
        first.wait().await.unwrap();
        second.wait().await.unwrap();
        assert_eq!(State::load(&store).await.unwrap().usage, state.usage);

        // Another writer moves the store on: the next change fails, and
        // the store refuses the rest until the state is read again.
        let other = Txn {
            ops: vec![Op::Put(
                task_key("x"),
                json(&task("x", "RUNNING", Some(81))).unwrap(),
            )],
            ..Txn::default()
        };
        store.commit(other).await.unwrap().unwrap();
        let lost = state
            .stage(&store, vec![Write::Task(task("b", "PENDING", None))])
            .unwrap();
        let refused = state
            .stage(&store, vec![Write::RemoveTask("a".into())])
            .unwrap();
        let e = lost.wait().await.unwrap_err();
        assert!(
            e.message.contains("changed under this control plane"),
            "{e:?}"
        );
        refused.wait().await.unwrap_err();
        state.reload(&store).await.unwrap();
        let ids: Vec<&String> = state.tasks.keys().collect();
        assert_eq!(ids, ["a", "x"]);
        assert_eq!(state.usage, summed(&state));
        // And changes are accepted again.
        state
            .apply(&store, vec![Write::Task(task("b", "PENDING", None))])
            .await
            .unwrap();
        assert_eq!(State::load(&store).await.unwrap().tasks.len(), 3);
    }
}
