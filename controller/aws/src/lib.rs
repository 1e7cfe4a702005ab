//! The AWS implementation of [`karpctl_cloud::CloudProvider`]. Not built yet (issue 5).
