resource "azurerm_kubernetes_cluster" "this" {
  name                      = "aks-${local.name}"
  location                  = azurerm_resource_group.this.location
  resource_group_name       = azurerm_resource_group.this.name
  dns_prefix                = local.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = "Standard"
  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"
  local_account_disabled    = true
  azure_policy_enabled      = true
  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  tags                      = local.tags
  #checkov:skip=CKV_AZURE_115:public API server limited to api_server_authorized_ip_ranges, so hosted CI runners can deploy; set private_cluster_enabled with self-hosted runners in the VNet
  #checkov:skip=CKV_AZURE_117:node disks are ephemeral with host encryption on; a disk encryption set (CMK) needs a key lifecycle this project does not own

  # system pool: only critical add-ons (CoreDNS, CSI drivers, metrics); workloads go to "work"
  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_node_vm_size
    vnet_subnet_id               = azurerm_subnet.aks.id
    auto_scaling_enabled         = true
    min_count                    = var.system_node_count.min
    max_count                    = var.system_node_count.max
    max_pods                     = 50
    os_disk_type                 = "Ephemeral"
    only_critical_addons_enabled = true
    host_encryption_enabled      = true
    zones                        = ["1", "2", "3"]
    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin    = "azure"
    network_policy    = "azure"
    load_balancer_sku = "standard"
    service_cidr      = "172.20.0.0/16"
    dns_service_ip    = "172.20.0.10"
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    tenant_id              = data.azurerm_client_config.current.tenant_id
    admin_group_object_ids = var.admin_group_object_ids
  }

  # Key Vault -> pods through the Secrets Store CSI driver (the chart's apiKeys.source=csi)
  key_vault_secrets_provider {
    secret_rotation_enabled  = true
    secret_rotation_interval = "2m"
  }

  # Container Insights into Log Analytics; managed Prometheus for the /metrics scrape
  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.this.id
    msi_auth_for_monitoring_enabled = true
  }

  monitor_metrics {}

  auto_scaler_profile {
    balance_similar_node_groups = true
    expander                    = "least-waste"
    scale_down_unneeded         = "10m"
  }
}

# user pool: Dagster runs/steps, Ray workers and the Bento pods (nodeSelector spam-mlops/pool)
resource "azurerm_kubernetes_cluster_node_pool" "work" {
  name                    = "work"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  vm_size                 = var.work_node_vm_size
  mode                    = "User"
  vnet_subnet_id          = azurerm_subnet.aks.id
  auto_scaling_enabled    = true
  min_count               = var.work_node_count.min
  max_count               = var.work_node_count.max
  max_pods                = 50
  os_disk_type            = "Ephemeral"
  host_encryption_enabled = true
  zones                   = ["1", "2", "3"]
  node_labels = {
    "spam-mlops/pool" = "work"
  }
  tags = local.tags
}
