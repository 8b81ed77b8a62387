# terraform apply -var-file=environments/production/terraform.tfvars
subscription_id                 = "00000000-0000-0000-0000-000000000000"
environment                     = "production"
location                        = "westeurope"
kubernetes_version              = "1.33"
system_node_count               = { min = 2, max = 3 }
work_node_count                 = { min = 2, max = 10 }
work_node_vm_size               = "Standard_D8ds_v5"
api_server_authorized_ip_ranges = ["203.0.113.0/24"]
admin_group_object_ids          = ["00000000-0000-0000-0000-000000000001"]
redis_sku                       = "Premium"
redis_capacity                  = 1
postgres_sku                    = "GP_Standard_D4ds_v5"
postgres_storage_mb             = 131072
postgres_high_availability      = true
log_retention_days              = 90
secret_expiry                   = "2027-06-30T00:00:00Z"
alert_email                     = "spam-oncall@example.com"
tags                            = { cost_center = "mail-security" }
