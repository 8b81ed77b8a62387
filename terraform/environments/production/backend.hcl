# terraform init -backend-config=environments/production/backend.hcl
# The state account is created once per organisation (versioning + soft delete on), outside
# this module; Entra auth, no access keys.
resource_group_name  = "rg-spam-tfstate"
storage_account_name = "stspamtfstate"
container_name       = "tfstate"
key                  = "spam-mlops/production.tfstate"
use_azuread_auth     = true
