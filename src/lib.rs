//! ebs2azure
