# terraform apply -var-file=environments/staging/terraform.tfvars
subscription_id                 = "00000000-0000-0000-0000-000000000000"
environment                     = "staging"
location                        = "westeurope"
kubernetes_version              = "1.33"
system_node_count               = { min = 1, max = 2 }
work_node_count                 = { min = 0, max = 3 }
work_node_vm_size               = "Standard_D4ds_v5"
api_server_authorized_ip_ranges = ["203.0.113.0/24"]
admin_group_object_ids          = ["00000000-0000-0000-0000-000000000001"]
redis_sku                       = "Standard"
redis_capacity                  = 1
postgres_sku                    = "B_Standard_B2s"
postgres_high_availability      = false
log_retention_days              = 30
secret_expiry                   = "2027-06-30T00:00:00Z"
alert_email                     = "spam-oncall@example.com"
