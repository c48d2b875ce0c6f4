// The ES module entry: the same objects as the CommonJS one (index.js).
import cjs from './index.js';

export const {
  ChatGPTOAuthProvider,
  createApp,
  startServer,
  runCli,
  version,
  ChatGPTOAuthError,
  ChatGPTOAuthInvalidRequestError,
  ChatGPTOAuthMissingError,
  ChatGPTOAuthRefreshError,
  ChatGPTOAuthModelNotFoundError,
  ChatGPTOAuthUpstreamError,
  ChatGPTOAuthUnavailableError,
  ChatGPTOAuthProtocolError,
} = cjs;
export default cjs;
