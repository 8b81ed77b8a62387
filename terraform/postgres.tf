# Dagster run/event/schedule storage, MLflow tracking and the Feast SQL registry.
# Private access: a delegated subnet + private DNS zone, no public endpoint.
resource "random_password" "postgres_admin" {
  length      = 32
  special     = true
  min_special = 2
  min_upper   = 2
  min_numeric = 2
}

resource "azurerm_postgresql_flexible_server" "this" {
  name                          = "pg-${local.name}-${random_string.suffix.result}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  version                       = "16"
  sku_name                      = var.postgres_sku
  storage_mb                    = var.postgres_storage_mb
  delegated_subnet_id           = azurerm_subnet.postgres.id
  private_dns_zone_id           = azurerm_private_dns_zone.postgres.id
  public_network_access_enabled = false
  administrator_login           = "spamadmin"
  administrator_password        = random_password.postgres_admin.result
  backup_retention_days         = 35
  geo_redundant_backup_enabled  = var.environment == "production"
  zone                          = "1"
  tags                          = local.tags

  dynamic "high_availability" {
    for_each = var.postgres_high_availability ? [1] : []
    content {
      mode                      = "ZoneRedundant"
      standby_availability_zone = "2"
    }
  }

  depends_on = [azurerm_private_dns_zone_virtual_network_link.postgres]
  #checkov:skip=CKV2_AZURE_57:private access through VNet integration (delegated subnet + private DNS zone, public access off) instead of a private endpoint
  #checkov:skip=CKV_AZURE_136:geo-redundant backups are on in production (geo_redundant_backup_enabled follows the environment)
}

resource "azurerm_postgresql_flexible_server_database" "this" {
  for_each  = toset(["dagster", "mlflow", "feast"])
  name      = each.key
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_postgresql_flexible_server_configuration" "log_connections" {
  name      = "log_connections"
  server_id = azurerm_postgresql_flexible_server.this.id
  value     = "on"
}
