//! The end-to-end tests, one binary so that they run side by side on the one data plane (each in
//! its own namespace): the operator in the cluster from `deploy/base`, real CloudNativePG, Barman
//! Cloud Plugin and External Secrets Operator, pods on a real node, and (in `argocd`) Argo CD
//! syncing the operator's own Application. No status here is written by a test.

mod argocd;
mod database;
mod drills;
mod failover;
mod pooler;
mod restore;
