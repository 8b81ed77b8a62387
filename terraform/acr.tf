resource "azurerm_container_registry" "this" {
  name                          = "acr${local.compact}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  sku                           = "Premium"
  admin_enabled                 = false
  public_network_access_enabled = true # `az acr build` tasks and CI push from outside the VNet
  zone_redundancy_enabled       = true
  retention_policy_in_days      = 30
  trust_policy_enabled          = true
  quarantine_policy_enabled     = false
  data_endpoint_enabled         = true
  tags                          = local.tags
  #checkov:skip=CKV_AZURE_139:CI runners and ACR Tasks build from outside the VNet; pushes need Entra auth (admin user off)
  #checkov:skip=CKV_AZURE_165:one registry per environment in the cluster's region; add georeplications blocks for a multi-region rollout
  #checkov:skip=CKV_AZURE_166:image quarantine needs an external scanner to release images; Defender for Containers scans instead
}

# the cluster pulls images with its kubelet identity: no pull secrets anywhere
resource "azurerm_role_assignment" "aks_acr_pull" {
  scope                            = azurerm_container_registry.this.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.this.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}
