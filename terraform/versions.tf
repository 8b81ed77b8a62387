# spam-mlops on Azure: AKS, ACR, ADLS Gen2, Azure Cache for Redis, PostgreSQL flexible server,
# Key Vault, Log Analytics. One root module; each environment is a tfvars + backend file:
#   terraform init -backend-config=environments/staging/backend.hcl
#   terraform apply -var-file=environments/staging/terraform.tfvars
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Remote state in a storage account of its own (created once, outside this module, with
  # versioning + soft delete); the per-environment settings are in environments/*/backend.hcl.
  backend "azurerm" {}
}

provider "azurerm" {
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
  subscription_id     = var.subscription_id
  storage_use_azuread = true
}

data "azurerm_client_config" "current" {}
