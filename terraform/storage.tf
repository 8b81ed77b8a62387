# ADLS Gen2: Dagster asset values (IO manager), MLflow artifacts, Feast offline tables,
# Dagster compute logs. Entra auth only (shared keys off): pods use workload identity.
resource "azurerm_storage_account" "adls" {
  name                              = "st${local.compact}"
  location                          = azurerm_resource_group.this.location
  resource_group_name               = azurerm_resource_group.this.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.environment == "production" ? "GZRS" : "ZRS"
  is_hns_enabled                    = true
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = true # reachable from CI for Terraform; default_action Deny below
  infrastructure_encryption_enabled = true
  default_to_oauth_authentication   = true
  local_user_enabled                = false
  tags                              = local.tags

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    virtual_network_subnet_ids = [azurerm_subnet.aks.id]
    ip_rules                   = [for c in var.api_server_authorized_ip_ranges : trimsuffix(c, "/32")]
  }

  blob_properties {
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys plus infrastructure (double) encryption; a CMK needs a key lifecycle this project does not own
  #checkov:skip=CKV2_AZURE_33:the cluster reaches the account through a service endpoint on snet-aks (network_rules), not a private endpoint
  #checkov:skip=CKV_AZURE_33:no queues are used (queue logging does not apply)
  #checkov:skip=CKV_AZURE_59:public endpoint is restricted by network_rules default_action=Deny (CI + cluster subnet only)
  #checkov:skip=CKV_AZURE_206:replication is ZRS in staging and GZRS in production (variable by environment)
}

resource "azurerm_storage_data_lake_gen2_filesystem" "this" {
  for_each           = toset(["dagster", "mlflow", "feast", "dagster-logs", "inference-log"])
  name               = each.key
  storage_account_id = azurerm_storage_account.adls.id
}
