locals {
  name = "${var.name_prefix}-${var.environment}"
  # storage accounts, ACR and Key Vault names: globally unique, no dashes
  compact = "${var.name_prefix}${substr(var.environment, 0, 4)}${random_string.suffix.result}"
  tags = merge(var.tags, {
    project     = "spam-mlops"
    environment = var.environment
    managed_by  = "terraform"
  })
  # Kubernetes service accounts that get an Azure identity (workload identity federation)
  serving_namespace = "spam-${var.environment}"
  serving_sa        = "spam-serving-${var.environment}"
  dagster_namespace = "dagster"
  dagster_sa        = "dagster-user-code"
}

resource "random_string" "suffix" {
  length  = 5
  upper   = false
  special = false
}

resource "azurerm_resource_group" "this" {
  name     = "rg-${local.name}"
  location = var.location
  tags     = local.tags
}
