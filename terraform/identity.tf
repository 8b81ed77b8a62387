# Workload identity: Kubernetes service accounts act as these Azure identities (no secrets).
locals {
  workload_identities = {
    serving = { namespace = local.serving_namespace, service_account = local.serving_sa }
    dagster = { namespace = local.dagster_namespace, service_account = local.dagster_sa }
  }
  # who may do what: serving reads the API keys; dagster writes asset values, MLflow
  # artifacts and Feast tables, reads its secrets, and builds the serving image in ACR
  role_assignments = {
    serving_kv   = { identity = "serving", scope = azurerm_key_vault.this.id, role = "Key Vault Secrets User" }
    dagster_kv   = { identity = "dagster", scope = azurerm_key_vault.this.id, role = "Key Vault Secrets User" }
    dagster_blob = { identity = "dagster", scope = azurerm_storage_account.adls.id, role = "Storage Blob Data Contributor" }
    dagster_acr  = { identity = "dagster", scope = azurerm_container_registry.this.id, role = "Contributor" }
  }
}

resource "azurerm_user_assigned_identity" "workload" {
  for_each            = local.workload_identities
  name                = "id-${local.name}-${each.key}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_federated_identity_credential" "workload" {
  for_each            = local.workload_identities
  name                = each.value.service_account
  resource_group_name = azurerm_resource_group.this.name
  parent_id           = azurerm_user_assigned_identity.workload[each.key].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject             = "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
}

resource "azurerm_role_assignment" "workload" {
  for_each             = local.role_assignments
  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.workload[each.value.identity].principal_id
}
