variable "subscription_id" {
  description = "Azure subscription the environment lives in."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.subscription_id))
    error_message = "subscription_id must be a GUID."
  }
}

variable "environment" {
  description = "staging or production; part of every resource name and tag."
  type        = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location is a region name such as westeurope."
  }
}

variable "name_prefix" {
  description = "Short prefix of resource names (lowercase letters and digits, 3-10)."
  type        = string
  default     = "spam"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,9}$", var.name_prefix))
    error_message = "name_prefix: 3-10 lowercase letters/digits, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (minor), e.g. 1.33."
  type        = string
  default     = "1.33"
  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version is a minor version such as 1.33."
  }
}

variable "system_node_vm_size" {
  description = "VM size of the system node pool (critical add-ons only)."
  type        = string
  default     = "Standard_D4ds_v5"
  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.system_node_vm_size))
    error_message = "system_node_vm_size is an Azure VM size such as Standard_D4ds_v5."
  }
}

variable "work_node_vm_size" {
  description = "VM size of the user pool running Dagster steps, Ray and the Bento."
  type        = string
  default     = "Standard_D8ds_v5"
  validation {
    condition     = can(regex("^Standard_[A-Za-z0-9_]+$", var.work_node_vm_size))
    error_message = "work_node_vm_size is an Azure VM size such as Standard_D4ds_v5."
  }
}

variable "system_node_count" {
  description = "Min and max nodes of the system pool (autoscaler)."
  type        = object({ min = number, max = number })
  default     = { min = 2, max = 3 }
  validation {
    condition     = var.system_node_count.min >= 1 && var.system_node_count.max >= var.system_node_count.min
    error_message = "system_node_count: 1 <= min <= max."
  }
}

variable "work_node_count" {
  description = "Min and max nodes of the user pool (autoscaler)."
  type        = object({ min = number, max = number })
  default     = { min = 1, max = 6 }
  validation {
    condition     = var.work_node_count.min >= 0 && var.work_node_count.max >= max(var.work_node_count.min, 1)
    error_message = "work_node_count: 0 <= min <= max, max >= 1."
  }
}

variable "vnet_cidr" {
  description = "Address space of the environment's virtual network."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vnet_cidr, 0))
    error_message = "vnet_cidr must be a CIDR block."
  }
}

variable "api_server_authorized_ip_ranges" {
  description = "CIDRs allowed to reach the AKS API server (CI runners, admins)."
  type        = list(string)
  validation {
    condition     = length(var.api_server_authorized_ip_ranges) > 0 && alltrue([for c in var.api_server_authorized_ip_ranges : can(cidrhost(c, 0))])
    error_message = "api_server_authorized_ip_ranges: at least one CIDR, all valid."
  }
}

variable "admin_group_object_ids" {
  description = "Entra ID groups that administer the cluster (Azure RBAC for Kubernetes)."
  type        = list(string)
  validation {
    condition     = length(var.admin_group_object_ids) > 0
    error_message = "At least one admin group: local accounts are disabled."
  }
}

variable "redis_sku" {
  description = "Azure Cache for Redis: Standard (staging) or Premium (production)."
  type        = string
  default     = "Standard"
  validation {
    condition     = contains(["Standard", "Premium"], var.redis_sku)
    error_message = "redis_sku must be Standard or Premium (Basic has no SLA/replica)."
  }
}

variable "redis_capacity" {
  description = "Cache size within the SKU family (C: 0-6, P: 1-5)."
  type        = number
  default     = 1
  validation {
    condition     = var.redis_capacity >= 0 && var.redis_capacity <= 6
    error_message = "redis_capacity is 0-6."
  }
}

variable "postgres_sku" {
  description = "PostgreSQL flexible server SKU (Dagster, MLflow and Feast registry)."
  type        = string
  default     = "GP_Standard_D2ds_v5"
  validation {
    condition     = can(regex("^(B|GP|MO)_", var.postgres_sku))
    error_message = "postgres_sku is a flexible server SKU such as GP_Standard_D2ds_v5."
  }
}

variable "postgres_storage_mb" {
  description = "PostgreSQL storage in MB."
  type        = number
  default     = 65536
  validation {
    condition     = var.postgres_storage_mb >= 32768
    error_message = "postgres_storage_mb must be at least 32768."
  }
}

variable "postgres_high_availability" {
  description = "Zone-redundant standby (production)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Log Analytics retention."
  type        = number
  default     = 90
  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days is 30-730."
  }
}

variable "api_key_count" {
  description = "API keys generated for the serving endpoint (rotated by tainting one)."
  type        = number
  default     = 2
  validation {
    condition     = var.api_key_count >= 1 && var.api_key_count <= 10
    error_message = "api_key_count is 1-10."
  }
}

variable "secret_expiry" {
  description = "Expiry (RFC 3339) of the Key Vault secrets; rotate before it."
  type        = string
  validation {
    condition     = can(formatdate("YYYY", var.secret_expiry))
    error_message = "secret_expiry must be an RFC 3339 timestamp such as 2027-06-30T00:00:00Z."
  }
}

variable "alert_email" {
  description = "Receives Azure Monitor alerts."
  type        = string
  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an e-mail address."
  }
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
