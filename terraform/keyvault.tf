# Secrets: the serving API keys (mounted by the CSI driver) and the PostgreSQL password
# (synced into the dagster namespace). Generated here, never written in a file or variable.
resource "azurerm_key_vault" "this" {
  name                          = "kv-${local.compact}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true # Terraform and CI write secrets; network_acls limit who
  tags                          = local.tags

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    virtual_network_subnet_ids = [azurerm_subnet.aks.id]
    ip_rules                   = var.api_server_authorized_ip_ranges
  }
  #checkov:skip=CKV2_AZURE_32:the cluster reaches Key Vault through the snet-aks service endpoint (network_acls), not a private endpoint
}

# the identity running Terraform writes the secrets below
resource "azurerm_role_assignment" "deployer_kv_officer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "random_password" "api_key" {
  count   = var.api_key_count
  length  = 43
  special = false
}

resource "azurerm_key_vault_secret" "api_keys" {
  name            = "spam-api-keys"
  value           = join("\n", random_password.api_key[*].result)
  key_vault_id    = azurerm_key_vault.this.id
  content_type    = "text/plain; one API key per line"
  expiration_date = var.secret_expiry
  depends_on      = [azurerm_role_assignment.deployer_kv_officer]
}

resource "azurerm_key_vault_secret" "postgres_admin" {
  name            = "postgres-admin-password"
  value           = random_password.postgres_admin.result
  key_vault_id    = azurerm_key_vault.this.id
  content_type    = "password"
  expiration_date = var.secret_expiry
  depends_on      = [azurerm_role_assignment.deployer_kv_officer]
}
