# What the Dagster/Helm side needs (SPAM_* settings; README "Production on AKS").
output "resource_group" {
  value = azurerm_resource_group.this.name
}

output "aks_name" {
  value = azurerm_kubernetes_cluster.this.name
}

output "aks_oidc_issuer_url" {
  value = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "acr_login_server" {
  description = "SPAM_AKS_REGISTRY"
  value       = azurerm_container_registry.this.login_server
}

output "storage_account" {
  description = "SPAM_AZURE_STORAGE_ACCOUNT"
  value       = azurerm_storage_account.adls.name
}

output "mlflow_artifact_uri" {
  description = "SPAM_MLFLOW_ARTIFACT_URI"
  value       = "abfss://mlflow@${azurerm_storage_account.adls.primary_dfs_host}/artifacts"
}

output "redis_host" {
  description = "SPAM_FEAST_REDIS = <host>:6380,ssl=true,password=<from Key Vault>"
  value       = azurerm_redis_cache.this.hostname
}

output "postgres_fqdn" {
  value = azurerm_postgresql_flexible_server.this.fqdn
}

output "key_vault_name" {
  description = "SPAM_AKS_KEY_VAULT_NAME"
  value       = azurerm_key_vault.this.name
}

output "tenant_id" {
  description = "SPAM_AZURE_TENANT_ID"
  value       = data.azurerm_client_config.current.tenant_id
}

output "serving_identity_client_id" {
  description = "SPAM_AKS_WORKLOAD_IDENTITY_CLIENT_ID"
  value       = azurerm_user_assigned_identity.workload["serving"].client_id
}

output "dagster_identity_client_id" {
  description = "serviceAccount annotation of the Dagster user-code deployment"
  value       = azurerm_user_assigned_identity.workload["dagster"].client_id
}

output "log_analytics_workspace_id" {
  value = azurerm_log_analytics_workspace.this.id
}
