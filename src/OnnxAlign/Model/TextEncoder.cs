using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>
/// A Stable-Diffusion-shaped model's text encoder (<c>text_encoder/model.onnx</c>, DESIGN §9): token ids
/// <c>input_ids</c> [batch, length] (int32 as Optimum exports it, or int64) → <c>last_hidden_state</c> [batch, length, width],
/// the hidden states the UNet's cross-attention reads. Paired with its <see cref="ClipTokenizer"/>.
/// </summary>
/// <remarks>Thread-safe: calls are serialised. Owns its session; dispose it.</remarks>
public sealed class TextEncoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly object _gate = new();
    private readonly string _inputName, _outputName;
    private readonly TensorElementType _idType;

    /// <summary>Opens the encoder at <paramref name="onnxPath"/> with <paramref name="tokenizer"/>'s ids.</summary>
    /// <exception cref="ConfigException">The network's inputs or outputs are not a text encoder's, or its length is not the tokenizer's.</exception>
    public TextEncoder(string onnxPath, ClipTokenizer tokenizer, DenoiserOptions? options = null)
    {
        Path = onnxPath;
        _session = OnnxDenoiser.OpenSession(onnxPath, options ?? new DenoiserOptions());
        try
        {
            var inputs = _session.InputMetadata;
            _inputName = inputs.ContainsKey("input_ids") ? "input_ids"
                : inputs.Count == 1 ? inputs.Keys.Single()
                : throw new ConfigException($"{onnxPath}: inputs {string.Join(", ", inputs.Keys)}; a text encoder takes input_ids (an attention mask is not supported)");
            if (inputs.Count > 1)
                throw new ConfigException($"{onnxPath}: inputs {string.Join(", ", inputs.Keys)}; a text encoder takes input_ids only (an attention mask is not supported)");
            var ids = inputs[_inputName];
            _idType = ids.ElementDataType;
            if (_idType is not (TensorElementType.Int32 or TensorElementType.Int64))
                throw new ConfigException($"{onnxPath}: input '{_inputName}' is {_idType}, expected int32 or int64 token ids");
            if (ids.Dimensions.Length != 2) throw new ConfigException($"{onnxPath}: input '{_inputName}' has rank {ids.Dimensions.Length}, expected [batch, length]");
            if (ids.Dimensions[1] > 0 && ids.Dimensions[1] != tokenizer.MaxLength)
                throw new ConfigException($"{onnxPath}: input '{_inputName}' has length {ids.Dimensions[1]}, the tokenizer ({tokenizer.Source}) makes {tokenizer.MaxLength}");
            var outputs = _session.OutputMetadata;
            _outputName = outputs.ContainsKey("last_hidden_state") ? "last_hidden_state"
                : outputs.Where(o => o.Value.Dimensions.Length == 3).Select(o => o.Key).ToList() is [var only] ? only
                : throw new ConfigException($"{onnxPath}: outputs {string.Join(", ", outputs.Keys)}; expected last_hidden_state [batch, length, width]");
            if (outputs[_outputName].ElementDataType is not (TensorElementType.Float or TensorElementType.Float16))
                throw new ConfigException($"{onnxPath}: output '{_outputName}' is {outputs[_outputName].ElementDataType}, expected float32 or float16");
            Tokenizer = tokenizer;
        }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    /// <summary>The ONNX file.</summary>
    public string Path { get; }

    /// <summary>The tokenizer whose ids the encoder reads.</summary>
    public ClipTokenizer Tokenizer { get; }

    /// <summary>The inputs and outputs, one line each (for <c>onnxalign inspect</c>).</summary>
    public string Describe() => OnnxDenoiser.DescribeSession(_session);

    /// <summary>Tokenizes and encodes <paramref name="prompt"/>.</summary>
    public PromptEncoding Encode(string prompt)
    {
        var ids = Tokenizer.Encode(prompt, out int content, out int truncated);
        return new PromptEncoding(prompt, ids, content, truncated, EncodeIds(ids));
    }

    /// <summary>The hidden states of one sequence of token ids (<see cref="ClipTokenizer.MaxLength"/> of them).</summary>
    /// <exception cref="ConfigException">The network fails on the ids or returns non-finite values.</exception>
    public TextEmbedding EncodeIds(IReadOnlyList<int> ids)
    {
        lock (_gate)
        {
            long[] shape = [1, ids.Count];
            using var input = _idType == TensorElementType.Int32
                ? OrtValue.CreateTensorValueFromMemory(ids.ToArray(), shape)
                : OrtValue.CreateTensorValueFromMemory(ids.Select(i => (long)i).ToArray(), shape);
            try
            {
                using var runOptions = new RunOptions();
                using var outputs = _session.Run(runOptions, [_inputName], [input], [_outputName]);
                var output = outputs[0];
                var dims = output.GetTensorTypeAndShape().Shape;
                if (dims.Length != 3 || dims[0] != 1 || dims[1] != ids.Count)
                    throw new ConfigException($"{Path}: output '{_outputName}' has shape [{string.Join(", ", dims)}] for [1, {ids.Count}] ids, expected [1, {ids.Count}, width]");
                float[] values = TensorValues.ToSingles(output);
                if (values.Any(v => !float.IsFinite(v))) throw new ConfigException($"{Path}: the text encoder returned NaN or infinite hidden states");
                return new TextEmbedding(values, (int)dims[1], (int)dims[2]);
            }
            catch (OnnxRuntimeException e)
            {
                throw new ConfigException($"{Path}: the text encoder failed on [1, {ids.Count}] ids ({e.Message.Split('\n')[0]})", e);
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _session.Dispose();
}

/// <summary>A prompt, its token ids and its hidden states.</summary>
/// <param name="Prompt">The text as given.</param>
/// <param name="Ids">The ids fed to the encoder (start, content, end, padding).</param>
/// <param name="ContentTokens">Tokens of the prompt that were fed (without start, end and padding).</param>
/// <param name="TruncatedTokens">Content tokens that did not fit (0 when the prompt fit).</param>
/// <param name="Embedding">The encoder's <c>last_hidden_state</c> for it.</param>
public sealed record PromptEncoding(string Prompt, IReadOnlyList<int> Ids, int ContentTokens, int TruncatedTokens, TextEmbedding Embedding);
